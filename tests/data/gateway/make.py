"""Regenerate the gateway-log fixtures: an OpenAI-compatible gateway's request log, as JSONL
(one JSON object a line: ISO-8601 time with offset, `usage` block, `timings` in ms, status,
error) and as CSV (ISO time in UTC, flat token columns, latencies in seconds).

Run: python tests/data/gateway/make.py  (deterministic: a fixed seed)."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).parent
MODELS = ["llama-3.1-8b-instruct", "qwen2.5-32b-instruct"]


def requests(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    t = datetime(2025, 3, 4, 9, 15, 0, tzinfo=timezone(timedelta(hours=1)))
    out = []
    for i in range(n):
        t += timedelta(seconds=rng.expovariate(2.0))
        model = MODELS[rng.random() < 0.3]
        prompt = int(rng.lognormvariate(6.3, 0.9)) + 8
        queue_ms = round(rng.expovariate(1 / 4.0), 2)
        status, error = 200, None
        if i % 23 == 7:
            status, error = 429, "rate_limit_exceeded: too many tokens per minute"
        elif i % 37 == 19:
            status, error = 500, "upstream_error: engine restarted"
        completion = 0 if status != 200 else int(rng.lognormvariate(5.2, 0.8)) + 1
        ttft_ms = round(queue_ms + 18 + prompt * 0.045 * (2.5 if "32b" in model else 1)
                        * rng.uniform(0.8, 1.3), 1)
        tpot_ms = rng.uniform(9, 14) * (2.2 if "32b" in model else 1)
        latency_ms = round(ttft_ms + tpot_ms * max(completion - 1, 0), 1) if completion \
            else round(queue_ms + rng.uniform(2, 30), 1)
        out.append({
            "time": t.isoformat(timespec="milliseconds"),
            "id": f"chatcmpl-{rng.getrandbits(48):012x}",
            "route": "/v1/chat/completions", "model": model,
            "user": f"team-{'abc'[i % 3]}", "session": f"s{rng.randrange(12):02d}",
            "stream": True, "status": status, "error": error,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
            "timings": {"queue_ms": queue_ms, "ttft_ms": ttft_ms if completion else None,
                        "latency_ms": latency_ms},
        })
    return out


def main() -> None:
    rows = requests(60, seed=25)
    with open(HERE / "gateway.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    with open(HERE / "gateway.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "request_id", "model", "status", "prompt_tokens",
                    "completion_tokens", "ttft_s", "e2e_latency_s", "error"])
        for r in requests(50, seed=26):
            utc = datetime.fromisoformat(r["time"]).astimezone(UTC)
            ttft = r["timings"]["ttft_ms"]
            w.writerow([utc.isoformat(timespec="milliseconds").replace("+00:00", "Z"), r["id"],
                        r["model"], r["status"], r["usage"]["prompt_tokens"],
                        r["usage"]["completion_tokens"],
                        "" if ttft is None else f"{ttft / 1000:.4f}",
                        f"{r['timings']['latency_ms'] / 1000:.4f}", r["error"] or ""])


if __name__ == "__main__":
    main()
