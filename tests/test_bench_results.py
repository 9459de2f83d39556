"""Readers of benchmark per-request results, on files the real tools wrote
(tests/data/bench/make.py): GuideLLM 0.8.1 `benchmarks.json` and AIPerf 0.13.0
`profile_export.jsonl` against the loopback stub (every 5th request failing), and vLLM
0.33.0's `vllm bench serve --save-detailed --append-result` result (two runs) against
`servecast emulate`, whose own log of the same requests is committed beside it, and SGLang
0.5.23's `bench_serving --output-details` (same lists) against the emulator too. Every
request is accounted for and its latencies land in seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
from pathlib import Path

import pytest

from servecast.errors import DataFileError
from servecast.store import Store
from tests.test_cli_store import servecast, user_error

BENCH = Path(__file__).parent / "data" / "bench"
GUIDELLM = BENCH / "guidellm_benchmarks.json"
AIPERF = BENCH / "aiperf_profile_export.jsonl"
VLLM = BENCH / "vllm_bench_result.json"
VLLM_EMULATOR = BENCH / "vllm_bench_emulator.jsonl"
SGLANG = BENCH / "sglang_bench_serving.json"
SGLANG_EMULATOR = BENCH / "sglang_bench_emulator.jsonl"
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


def vllm_results(path: Path = VLLM) -> list[dict]:
    """The results of a vLLM bench file: one JSON object, or several appended
    (`--append-result` writes each after a newline)."""
    text, docs, decoder = path.read_text(), [], json.JSONDecoder()
    i = 0
    while i < len(text):
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
        while i < len(text) and text[i].isspace():
            i += 1
    return docs


def write_results(path: Path, docs: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(d) for d in docs))
    return path


def check_vllm(rows: list[dict], path: Path = VLLM) -> None:
    """`rows` (one trace, in order) hold every request of every result in `path`, with its
    latencies in seconds: the means and medians of vLLM's own summary (ms) agree."""
    docs = vllm_results(path)
    assert len(rows) == sum(len(d["input_lens"]) for d in docs)
    t0 = min(t for d in docs for t in d.get("start_times") or [0.0])
    at = 0
    for d in docs:
        got_run, at = rows[at: at + len(d["input_lens"])], at + len(d["input_lens"])
        run = d.get("label") or d.get("tag") or (f"request_rate={d['request_rate']}"
                                                 f" max_concurrency={d['max_concurrency']}")
        for i, got in enumerate(got_run):
            assert got["log_type"] == run and got["model"] == d.get("model_id")
            assert got["prompt_tokens"] == d["input_lens"][i]
            assert got["output_tokens"] == d["output_lens"][i]
            assert got["failed"] == bool(d["errors"][i])
            assert got["error"] == (d["errors"][i] or None)
            if "start_times" in d:
                assert got["arrival_s"] == pytest.approx(d["start_times"][i] - t0, abs=1e-9)
            if got["failed"]:  # vLLM's zero latencies of a failed request are no measurements
                assert got["ttft_s"] is got["elapsed_s"] is got["tpot_s"] is None
                assert got["queue_s"] is got["response_text"] is None
                continue
            assert got["ttft_s"] == pytest.approx(d["ttfts"][i])
            assert got["elapsed_s"] == pytest.approx(d["latencies"][i] if "latencies" in d
                                                     else d["ttfts"][i] + sum(d["itls"][i]))
            assert 0 < got["ttft_s"] < got["elapsed_s"]
            assert got["response_text"] == d.get("generated_texts", [None] * (i + 1))[i]
            assert got["queue_s"] == (d["server_queue_times"][i]
                                      if "server_queue_times" in d else None)
        ok = [r for r in got_run if not r["failed"]]
        assert (len(ok), len(got_run) - len(ok)) == (d["completed"], d.get("failed", 0))
        assert sum(r["prompt_tokens"] for r in ok) == d["total_input_tokens"]
        assert sum(r["output_tokens"] for r in ok) == d["total_output_tokens"]
        ttft = [r["ttft_s"] * 1e3 for r in ok]
        tpot = [r["tpot_s"] * 1e3 for r in ok if r["output_tokens"] > 1]
        assert statistics.mean(ttft) == pytest.approx(d["mean_ttft_ms"])
        assert statistics.median(ttft) == pytest.approx(d["median_ttft_ms"])
        if "latencies" in d:  # vLLM's TPOT: (latency - TTFT) / (output tokens - 1)
            assert statistics.mean(tpot) == pytest.approx(d["mean_tpot_ms"])
            assert statistics.median(tpot) == pytest.approx(d["median_tpot_ms"])
        else:  # without latencies, the mean of the request's own inter-token gaps
            assert tpot == pytest.approx([statistics.mean(g) * 1e3 for g, e in
                                          zip(d["itls"], d["errors"], strict=True)
                                          if not e and len(g)])


def check_emulator(rows: list[dict], log: Path = VLLM_EMULATOR, warmups: int = 0) -> None:
    """Each request the emulator served (after the client's first `warmups`) is one
    successful row with the same prompt and output tokens (matched by tokens, then
    arrival), seen by the client no earlier than the emulator's simulated TTFT and
    end-to-end latency; the failed rows never reached it."""
    served = sorted((json.loads(line) for line in log.read_text().splitlines()),
                    key=lambda s: s["arrival_s"])[warmups:]
    ok = [r for r in rows if not r["failed"]]
    assert len(ok) == len(served)
    if ok[0]["arrival_s"] is None:  # no client start times (SGLang): match by tokens only
        t_client, t_server = 0.0, 0.0
        ok = [r | {"arrival_s": 0.0} for r in ok]
    else:
        t_client = min(r["arrival_s"] for r in ok)
        t_server = min(s["arrival_s"] for s in served)
    for r in ok:
        same = [s for s in served if (s["prompt_tokens"], s["output_tokens"]) ==
                (r["prompt_tokens"], r["output_tokens"])]
        s = min(same, key=lambda s: abs(s["arrival_s"] - t_server - r["arrival_s"] + t_client))
        served.remove(s)
        assert r["ttft_s"] >= s["ttft_ms"] / 1e3 and r["elapsed_s"] >= s["e2el_ms"] / 1e3
    assert not served


def test_vllm_bench_result_through_the_cli(tmp_path):
    """The file vLLM 0.33.0 wrote: two appended runs, 2 of 20 requests rejected (HTTP 400)
    in each, every row there with vLLM's own numbers and the emulator's record."""
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "vllm-bench", VLLM, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 40 rows into vllm_bench_result (0 rejected)" in proc.stdout
    rows = stored(db)
    check_vllm(rows)
    check_emulator(rows)
    assert [r["log_type"] for r in rows] == (["request_rate=4.0 max_concurrency=4"] * 20 +
                                             ["request_rate=inf max_concurrency=8"] * 20)
    assert sum(r["failed"] for r in rows) == 4
    assert {r["error"] for r in rows if r["failed"]} == {"Bad Request"}


def test_sglang_bench_serving_reads_as_vllm_bench(tmp_path):
    """SGLang's bench_serving writes vLLM's per-request lists (without latencies or start
    times): the vllm-bench reader takes it, every request there, and the emulator served
    each of them."""
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest("vllm-bench", SGLANG)
        rows = store.sql("SELECT * FROM llm_requests ORDER BY request_id").to_dicts()
    assert (result.rows, result.rejected) == (20, 0)
    check_vllm(rows, SGLANG)
    check_emulator(rows, SGLANG_EMULATOR, warmups=1)
    assert {r["log_type"] for r in rows} == {"request_rate=4.0 max_concurrency=4"}


def test_bench_result_saved_as_jsonl_is_one_document(tmp_path):
    """SGLang's default file name is `*.jsonl`: the file is still one result a line, many
    requests each, so the store takes the reader's count, not the file's line count."""
    named = tmp_path / "sglang_result.jsonl"
    named.write_bytes(SGLANG.read_bytes())
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest("vllm-bench", named)
        stored = store.sql("SELECT count(*) AS n FROM llm_requests")["n"][0]
    assert (result.rows, result.rejected, stored) == (20, 0, 20)


def without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


#: the real file's first result, alone (saved without --append-result), as it would be
#: with --label, as older vLLM wrote it (no latencies, start times, queue times or texts),
#: and with the server-side lists vLLM adds when the server reports them per request
VARIANTS = {
    "one": lambda d: d,
    "label": lambda d: d | {"label": "sweep-a"},
    "older": lambda d: without(d, "latencies", "start_times", "queue_times",
                               "generated_texts"),
    "server": lambda d: d | {"server_queue_times": [t / 4 for t in d["ttfts"]],
                             "server_ttfts": [t / 2 for t in d["ttfts"]]},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_vllm_bench_result_layouts(tmp_path, variant):
    f = write_results(tmp_path / "vllm-result.json", [VARIANTS[variant](vllm_results()[0])])
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest("vllm-bench", f)
        rows = store.sql("SELECT * FROM llm_requests ORDER BY request_id").to_dicts()
    assert (result.rows, result.rejected) == (20, 0)
    check_vllm(rows, f)
    if variant == "older":
        assert {r["arrival_s"] for r in rows} == {None}


@pytest.mark.slow  # CLI subprocesses
def test_vllm_bench_bad_files(tmp_path):
    db = tmp_path / "s.duckdb"
    first, second = vllm_results()
    # what vLLM keeps without --save-detailed
    summary = without(first, "input_lens", "output_lens", "start_times", "ttfts", "itls",
                      "generated_texts", "errors")
    f = write_results(tmp_path / "summary.json", [summary])
    user_error(servecast("ingest", "vllm-bench", f, "--db", db), "no per-request lists",
               "input_lens, output_lens, ttfts, itls, errors", "--save-detailed")
    cut = second | {"ttfts": second["ttfts"][:3]}
    f = write_results(tmp_path / "cut.json", [first, cut])
    user_error(servecast("ingest", "vllm-bench", f, "--db", db), "result 2 of 2",
               "differ in length", "ttfts 3", "input_lens 20")
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


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SERVECAST_VLLM"), reason="set SERVECAST_VLLM to the "
                    "`vllm` command of a venv with vLLM 0.33.0 (not a project dependency)")
def test_vllm_fixture_regenerates_with_vllm(tmp_path):
    """Run `vllm bench serve` again against the emulator (make.py --vllm) and ingest what
    it writes: the reader follows vLLM, not the committed copy."""
    spec = importlib.util.spec_from_file_location("bench_make", BENCH / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    make.main(tmp_path, Path(os.environ["SERVECAST_VLLM"]), stub_tools=False)
    with Store(tmp_path / "s.duckdb") as store:
        assert store.ingest("vllm-bench", tmp_path / "vllm_bench_result.json").rejected == 0
        rows = store.sql("SELECT * FROM llm_requests ORDER BY request_id").to_dicts()
    check_vllm(rows, tmp_path / "vllm_bench_result.json")
    check_emulator(rows, tmp_path / "vllm_bench_emulator.jsonl")
    assert 0 < sum(r["failed"] for r in rows) < len(rows)
