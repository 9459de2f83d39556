"""Readers of benchmark per-request results: GuideLLM 0.8.1 `benchmarks.json` and AIPerf
0.13.0 `profile_export.jsonl` written by the real tools (tests/data/bench/make.py ran them
against the loopback stub, every 5th request failing), and vLLM bench's `--save-detailed`
result JSON. Every request is accounted for and its latencies land in seconds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from servecast.errors import DataFileError
from servecast.store import Store
from tests.test_cli_store import servecast, user_error

BENCH = Path(__file__).parent / "data" / "bench"
GUIDELLM = BENCH / "guidellm_benchmarks.json"
AIPERF = BENCH / "aiperf_profile_export.jsonl"
UNIT_S = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def stored(db: Path) -> list[dict]:
    with Store(db, read_only=True) as store:
        return store.sql("SELECT * FROM llm_requests ORDER BY trace, request_id").to_dicts()


def guidellm_requests(path: Path = GUIDELLM) -> list[tuple[str, dict]]:
    """(strategy, request) in the reader's order."""
    doc = json.loads(path.read_text())
    return [(b["config"]["strategy"]["type_"], r) for b in doc["benchmarks"]
            for kind in ("successful", "errored", "incomplete") for r in b["requests"][kind]]


def check_guidellm(rows: list[dict], path: Path = GUIDELLM) -> None:
    src = guidellm_requests(path)
    assert len(rows) == len(src)
    t0 = min(r["request_start_time"] for _, r in src)
    for got, (strategy, want) in zip(rows, src, strict=True):
        assert got["log_type"] == strategy
        assert got["arrival_s"] == pytest.approx(want["request_start_time"] - t0)
        assert got["prompt_tokens"] == want["prompt_tokens"]
        assert got["status"] == want["info"]["status"]
        assert got["failed"] == (want["info"]["status"] != "completed")
        if got["failed"]:
            assert got["error"] == want["info"]["error"] and got["error"]
            continue
        assert got["output_tokens"] == want["output_tokens"]
        assert got["elapsed_s"] == pytest.approx(want["request_latency"])
        assert got["ttft_s"] == pytest.approx(want["time_to_first_token_ms"] / 1e3)
        assert got["tpot_s"] == pytest.approx(want["inter_token_latency_ms"] / 1e3)
        assert 0 < got["ttft_s"] < got["elapsed_s"] and got["model"] == "stub-model"


def check_aiperf(rows: list[dict], path: Path = AIPERF) -> None:
    src = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(src)
    t0 = min(r["metadata"]["request_start_ns"] for r in src)
    for got, want in zip(rows, src, strict=True):
        m = want["metrics"]
        assert got["arrival_s"] == pytest.approx((want["metadata"]["request_start_ns"] - t0)
                                                 / 1e9, abs=1e-6)
        assert got["failed"] == bool(want.get("error"))
        if got["failed"]:  # AIPerf keeps only the prompt length of a failed request
            assert got["error"] == want["error"]["message"]
            assert got["prompt_tokens"] == m["error_isl"]["value"]
            assert got["output_tokens"] == 0 and got["elapsed_s"] is None
            continue
        assert got["prompt_tokens"] == m["input_sequence_length"]["value"]
        assert got["output_tokens"] == m["output_sequence_length"]["value"]
        for col, name in [("elapsed_s", "request_latency"), ("ttft_s", "time_to_first_token"),
                          ("tpot_s", "inter_token_latency")]:
            assert got[col] == pytest.approx(m[name]["value"] / UNIT_S[m[name]["unit"]])


def test_guidellm_benchmarks_json_through_the_cli(tmp_path):
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "guidellm", GUIDELLM, "--db", db)
    assert proc.returncode == 0, proc.stderr
    n = len(guidellm_requests())
    assert f"ingested {n} rows into guidellm_benchmarks (0 rejected)" in proc.stdout
    rows = stored(db)
    check_guidellm(rows)
    assert {r["log_type"] for r in rows} == {"synchronous", "constant"}
    assert 0 < sum(r["failed"] for r in rows) < n  # the stub's injected failures are kept


def test_aiperf_profile_export_through_the_cli(tmp_path):
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "aiperf", AIPERF, "--db", db)
    assert proc.returncode == 0, proc.stderr
    n = len(AIPERF.read_text().splitlines())
    assert f"ingested {n} rows into aiperf_profile_export (0 rejected)" in proc.stdout
    rows = stored(db)
    check_aiperf(rows)
    assert 0 < sum(r["failed"] for r in rows) < n


def test_aiperf_bad_lines_are_rejected_with_their_line(tmp_path):
    lines = AIPERF.read_text().splitlines()
    good = json.loads(lines[0])
    good["metrics"]["time_to_first_token"]["unit"] = "fortnights"
    lines[0] = json.dumps(good)
    lines[3] = lines[3][: len(lines[3]) // 2]  # a truncated record
    f = tmp_path / "profile_export.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest("aiperf", f)
        assert (result.rows, result.rejected) == (len(lines) - 2, 2)
        rej = store.con.execute(
            "SELECT line, reason FROM rejected_rows ORDER BY line").fetchall()
    assert rej[0] == (1, "a latency metric has a unit other than s, ms, us or ns")
    assert rej[1][0] == 4 and "not valid JSON" in rej[1][1]


def vllm_result(n: int = 5, detailed_times: bool = True) -> dict:
    """A result in the layout `vllm bench serve --save-result --save-detailed` writes
    (vllm/benchmarks/serve.py, Apache-2.0: setup keys, then the benchmark's result dict);
    one request failed, as vLLM records it (empty lists, an error string)."""
    ttfts = [0.05 + 0.01 * i for i in range(n)]
    output_lens = [8 + 3 * i for i in range(n)]
    itls = [[0.004 + 0.0005 * i] * (k - 1) for i, k in enumerate(output_lens)]
    errors = [""] * n
    ttfts[2], output_lens[2], itls[2] = 0.0, 0, []
    errors[2] = "Traceback: aiohttp.ClientResponseError: 500, message='Internal Server Error'"
    out = {"date": "20251204-101500", "endpoint_type": "openai-chat", "backend": "openai-chat",
           "label": None, "model_id": "meta-llama/Llama-3.1-8B-Instruct",
           "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct", "num_prompts": n,
           "request_rate": 4.0, "burstiness": 1.0, "max_concurrency": 2, "duration": 3.2,
           "completed": n - 1, "failed": 1, "input_lens": [100 + 20 * i for i in range(n)],
           "output_lens": output_lens, "ttfts": ttfts, "itls": itls,
           "generated_texts": ["ok"] * n, "errors": errors}
    if detailed_times:
        out |= {"latencies": [t + sum(g) for t, g in zip(ttfts, itls, strict=True)],
                "start_times": [1000.0 + 0.25 * i for i in range(n)],
                "queue_times": [0.0, 0.0, 0.1, 0.12, 0.0]}
        out["latencies"][2] = 0.0
    return out


@pytest.mark.parametrize("detailed_times", [True, False])
def test_vllm_bench_detailed_result(tmp_path, detailed_times):
    src = vllm_result(detailed_times=detailed_times)
    f = tmp_path / "vllm-result.json"
    f.write_text(json.dumps(src, indent=4))
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "vllm-bench", f, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 5 rows into vllm-result (0 rejected)" in proc.stdout
    rows = stored(db)
    for i, got in enumerate(rows):
        assert got["prompt_tokens"] == src["input_lens"][i]
        assert got["output_tokens"] == src["output_lens"][i]
        assert got["failed"] == (i == 2) and got["model"] == src["model_id"]
        assert got["error"] == (src["errors"][i] or None)
        assert got["queue_s"] is None  # vLLM's queue_times is client-side
        assert got["arrival_s"] == (pytest.approx(0.25 * i) if detailed_times else None)
        if i == 2:  # the failed request: vLLM's zero latencies are not measurements
            assert got["ttft_s"] is got["elapsed_s"] is got["tpot_s"] is None
            continue
        assert got["ttft_s"] == pytest.approx(src["ttfts"][i])
        assert got["elapsed_s"] == pytest.approx(src["ttfts"][i] + sum(src["itls"][i]))
        assert got["tpot_s"] == pytest.approx(src["itls"][i][0])


@pytest.mark.slow  # CLI subprocesses
def test_vllm_bench_bad_files(tmp_path):
    db = tmp_path / "s.duckdb"
    plain = {k: v for k, v in vllm_result().items() if k not in ("ttfts", "itls")}
    f = tmp_path / "summary.json"
    f.write_text(json.dumps(plain))  # saved without --save-detailed
    user_error(servecast("ingest", "vllm-bench", f, "--db", db), "no per-request lists",
               "ttfts, itls", "--save-detailed")
    cut = vllm_result()
    cut["ttfts"] = cut["ttfts"][:3]
    f.write_text(json.dumps(cut))
    user_error(servecast("ingest", "vllm-bench", f, "--db", db), "differ in length",
               "ttfts 3", "input_lens 5")
    user_error(servecast("ingest", "guidellm", f, "--db", db), "not a GuideLLM")
    with pytest.raises(DataFileError):
        with Store(db) as store:
            store.ingest("vllm-bench", AIPERF)
    with Store(db, read_only=True) as store:
        assert store.traces().is_empty()


@pytest.mark.slow
def test_fixtures_regenerate_with_the_real_tools(tmp_path, tools_python):
    """Run GuideLLM and AIPerf again against the stub (tests/data/bench/make.py) and ingest
    what they write: the readers follow the tools, not the committed copies."""
    spec = importlib.util.spec_from_file_location("bench_make", BENCH / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    make.TOOLS = tools_python.parent
    make.main(tmp_path)
    with Store(tmp_path / "s.duckdb") as store:
        for source, name in [("guidellm", "guidellm_benchmarks.json"),
                             ("aiperf", "aiperf_profile_export.jsonl")]:
            assert store.ingest(source, tmp_path / name).rejected == 0
        rows = store.sql("SELECT * FROM llm_requests ORDER BY trace, request_id").to_dicts()
    check_aiperf([r for r in rows if r["trace"] == "aiperf_profile_export"],
                 tmp_path / "aiperf_profile_export.jsonl")
    check_guidellm([r for r in rows if r["trace"] == "guidellm_benchmarks"],
                   tmp_path / "guidellm_benchmarks.json")
