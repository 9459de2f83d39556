"""A simulation's results in vLLM bench's names (`vllm bench serve`, vllm/benchmarks/serve.py
`calculate_metrics` and its result JSON).

Per request: TTFT = first token - arrival, E2EL = last token - arrival, TPOT = (E2EL - TTFT)
/ (output tokens - 1) (requests of one output token have no TPOT; for goodput their TPOT
counts as 0), ITL = every gap between consecutive tokens of a request (over all requests).
Summary: `{mean,median,std,p50,p90,p99}_{ttft,tpot,itl,e2el}_ms`, `duration` (first arrival
to last token, s), `request_throughput` / `output_throughput` / `total_token_throughput`
(per s of duration), `request_goodput` (requests meeting every `--goodput` SLO per s; None
without SLOs) and, beyond vLLM's keys, `slo_attainment` (their share), `preemptions` and
`prefix_cache_hit_rate` (prompt tokens served from the prefix cache / prompt tokens).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.simulator.cluster import SimRun

PERCENTILES = (50, 90, 99)
GOODPUT_METRICS = ("ttft", "tpot", "e2el")


def parse_goodput(items: list[str] | None) -> dict[str, float]:
    """vLLM's `--goodput KEY:MS ...` (keys ttft, tpot, e2el; ms > 0) -> {key: ms}."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition(":")
        if not sep or key not in GOODPUT_METRICS:
            raise InvalidInputError(f"--goodput {item!r}: write KEY:MS with KEY one of "
                                    f"{', '.join(GOODPUT_METRICS)} (e.g. ttft:500 tpot:50)")
        try:
            ms = float(value)
        except ValueError:
            ms = float("nan")
        if not ms > 0 or ms == float("inf"):
            raise InvalidInputError(f"--goodput {item!r}: {value!r} is not a positive number "
                                    "of milliseconds")
        out[key] = ms
    return out


def requests_frame(run: SimRun, goodput: dict[str, float] | None = None) -> pl.DataFrame:
    """One row per request: request_id, replica, arrival_s, prompt_tokens, output_tokens,
    cached_tokens, preemptions, ttft_ms, tpot_ms (null for one output token), e2el_ms and
    `good` (meets every SLO of `goodput`; null without SLOs)."""
    rows = {k: [] for k in ("request_id", "replica", "arrival_s", "prompt_tokens",
                            "output_tokens", "cached_tokens", "preemptions", "first_s",
                            "finish_s")}
    for k, e in enumerate(run.cluster.engines):
        for s in e.seqs.values():
            r = s.req
            for key, v in (("request_id", r.request_id), ("replica", k),
                           ("arrival_s", r.arrival_s), ("prompt_tokens", r.prompt_tokens),
                           ("output_tokens", r.output_tokens), ("cached_tokens", s.cached),
                           ("preemptions", s.preemptions), ("first_s", s.first_s),
                           ("finish_s", s.finish_s)):
                rows[key].append(v)
    df = pl.DataFrame(rows).sort("arrival_s", "request_id")
    ttft = (pl.col("first_s") - pl.col("arrival_s")) * 1000
    e2el = (pl.col("finish_s") - pl.col("arrival_s")) * 1000
    tpot = pl.when(pl.col("output_tokens") > 1).then(
        (e2el - ttft) / (pl.col("output_tokens") - 1))
    df = df.with_columns(ttft_ms=ttft, tpot_ms=tpot, e2el_ms=e2el).drop("first_s", "finish_s")
    if goodput:
        good = pl.lit(True)
        for key, ms in goodput.items():
            good = good & (pl.col(f"{key}_ms").fill_null(0.0) <= ms)
        return df.with_columns(good=good)
    return df.with_columns(good=pl.lit(None, dtype=pl.Boolean))


def summarize(run: SimRun, goodput: dict[str, float] | None = None,
              percentiles=PERCENTILES) -> dict:
    """The run's summary in vLLM bench's result keys (see the module docstring)."""
    df = requests_frame(run, goodput)
    itl = np.concatenate([np.repeat(g, w) for e in run.cluster.engines for g, w in e.itl]
                         or [np.zeros(0)]) * 1000
    duration = _duration(df)
    total_in, total_out = int(df["prompt_tokens"].sum()), int(df["output_tokens"].sum())
    out = {"duration": duration, "completed": df.height, "failed": 0,
           "total_input_tokens": total_in, "total_output_tokens": total_out,
           "request_throughput": df.height / duration,
           "request_goodput": None if not goodput else int(df["good"].sum()) / duration,
           "output_throughput": total_out / duration,
           "total_token_throughput": (total_in + total_out) / duration}
    series = {"ttft": df["ttft_ms"].to_numpy(), "tpot": df["tpot_ms"].drop_nulls().to_numpy(),
              "itl": itl, "e2el": df["e2el_ms"].to_numpy()}
    for name, v in series.items():
        v = v if len(v) else np.zeros(1)
        out[f"mean_{name}_ms"] = float(np.mean(v))
        out[f"median_{name}_ms"] = float(np.median(v))
        out[f"std_{name}_ms"] = float(np.std(v))
        for p in percentiles:
            word = str(int(p)) if int(p) == p else str(p)
            out[f"p{word}_{name}_ms"] = float(np.percentile(v, p))
    out["slo_attainment"] = None if not goodput else float(df["good"].mean())
    out["preemptions"] = int(df["preemptions"].sum())
    out["prefix_cache_hit_rate"] = float(df["cached_tokens"].sum()) / max(total_in, 1)
    return out


def _duration(df: pl.DataFrame) -> float:
    """First arrival to the last token, s."""
    end = (df["arrival_s"] + df["e2el_ms"] / 1000).max()
    return float(end - df["arrival_s"].min())


def result_json(run: SimRun, summary: dict, request_rate: float | None = None) -> dict:
    """The result JSON of `vllm bench serve --save-result` for this run: its header keys
    (date, backend, model_id, tokenizer_id, num_prompts, request_rate, burstiness,
    max_concurrency), the summary and the per-request `input_lens`, `output_lens`, `ttfts`
    (s) and `errors`; `itls` and `generated_texts` (per token / text) are left out.
    `deployment`, `policy` and `router` say what was simulated."""
    df = requests_frame(run)
    dep = run.compiled.deployment
    return {"date": datetime.now().strftime("%Y%m%d-%H%M%S"), "backend": "servecast-simulator",
            "model_id": dep.model, "tokenizer_id": None, "num_prompts": df.height,
            "request_rate": request_rate if request_rate is not None else "trace",
            "burstiness": None, "max_concurrency": None, **summary,
            "input_lens": df["prompt_tokens"].to_list(),
            "output_lens": df["output_tokens"].to_list(),
            "ttfts": (df["ttft_ms"] / 1000).to_list(), "errors": [""] * df.height,
            "deployment": dep.as_dict(), "policy": run.policy, "router": run.router}


def write_results(run: SimRun, out_dir: str | Path, goodput: dict[str, float] | None = None,
                  request_rate: float | None = None) -> dict:
    """Write `requests.jsonl` (one `requests_frame` row per line) and `result.json` (vLLM
    bench's schema) into `out_dir` (each written to a temporary name, then renamed: no
    half-written file). Returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(run, goodput)
    frame = requests_frame(run, goodput)
    _atomic(out / "requests.jsonl", lambda p: frame.write_ndjson(p))
    doc = result_json(run, summary, request_rate)
    _atomic(out / "result.json", lambda p: p.write_text(json.dumps(doc, indent=1)))
    return summary


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)
