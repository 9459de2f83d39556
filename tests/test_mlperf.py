"""MLPerf Inference LLM results -> `mlperf_results`: the real v4.1 file against values read
with the csv module (ns -> ms / s, scenario case), bad rows with their lines, a wrong header."""

from __future__ import annotations

import csv

import pytest

from servecast.errors import SchemaMismatchError
from servecast.store import Store

CSV = "serving/mlperf/inference_v4.1_llm.csv"


@pytest.fixture(scope="module")
def store(store_of):
    return store_of(("mlperf", CSV, "v41"))


def test_every_row_with_units(store, data):
    rows = list(csv.DictReader(open(data / CSV)))
    (n,) = store.con.execute("SELECT count(*) FROM mlperf_results").fetchone()
    assert n == len(rows)
    server = [r for r in rows if r["mean_tpot_ns"]]
    r = server[len(server) // 2]
    got = store.con.execute(
        """SELECT scenario, mean_ttft_ms, p99_tpot_ms, tpot_limit_ms, mean_latency_s,
                  accelerator_memory_gb, target_qps FROM mlperf_results
           WHERE submitter = ? AND system = ? AND benchmark = ? AND lower(scenario) = ?""",
        [r["submitter"], r["system"], r["benchmark"], r["scenario"].lower()]).fetchall()
    assert len(got) == 1
    scen, ttft, p99_tpot, limit, lat, mem, qps = got[0]
    assert scen == r["scenario"].capitalize()
    assert ttft == pytest.approx(float(r["mean_ttft_ns"]) / 1e6)
    assert p99_tpot == pytest.approx(float(r["p99_tpot_ns"]) / 1e6)
    assert limit == pytest.approx(float(r["tpot_limit_ns"]) / 1e6)
    assert lat == pytest.approx(float(r["mean_latency_ns"]) / 1e9)
    assert mem == pytest.approx(float(r["accelerator_memory"].split()[0]))
    assert qps == pytest.approx(float(r["target_qps"]))


def test_scenarios_and_memory_normalized(store, data):
    rows = list(csv.DictReader(open(data / CSV)))
    got = dict(store.con.execute(
        "SELECT scenario, count(*) FROM mlperf_results GROUP BY 1").fetchall())
    want: dict[str, int] = {}
    for r in rows:
        name = {"singlestream": "SingleStream"}.get(r["scenario"].lower(),
                                                    r["scenario"].capitalize())
        want[name] = want.get(name, 0) + 1
    assert got == want
    mib = [r for r in rows if r["accelerator_memory"].endswith("MiB")]
    assert mib  # the file has one memory size in MiB: converted, not dropped
    (gb,) = store.con.execute(
        "SELECT accelerator_memory_gb FROM mlperf_results WHERE system = ? AND benchmark = ? "
        "AND lower(scenario) = ?",
        [mib[0]["system"], mib[0]["benchmark"], mib[0]["scenario"].lower()]).fetchone()
    assert gb == pytest.approx(float(mib[0]["accelerator_memory"].split()[0]) / 1024)
    (unknown,) = store.con.execute(
        "SELECT count(*) FROM mlperf_results WHERE accelerator_memory_gb IS NULL").fetchone()
    assert unknown == sum(1 for r in rows if r["accelerator_memory"] in ("N/A",
                                                                         "Shared with host"))


def test_bad_rows_and_header(tmp_path, data):
    lines = (data / CSV).read_text().splitlines()
    header, server = lines[0], next(ln for ln in lines if ",Server," in ln and "ns" not in ln)
    f = tmp_path / "results.csv"
    bad_scenario = server.replace(",Server,", ",Batch,")
    negative = server.replace(",Server,", ",Server,").replace(",VALID,", ",VALID,", 1)
    cells = next(csv.reader([negative]))
    cells[header.split(",").index("mean_ttft_ns")] = "-5"
    no_qps = next(csv.reader([server]))
    no_qps[header.split(",").index("target_qps")] = ""
    f.write_text("\n".join([header, server, bad_scenario, _row(cells), _row(no_qps)]) + "\n")
    with Store(tmp_path / "s.duckdb") as s:
        res = s.ingest("mlperf", [f])
        assert (res.rows, res.rejected) == (1, 3)
        got = s.con.execute("SELECT line, reason FROM rejected_rows ORDER BY line").fetchall()
        assert [ln for ln, _ in got] == [3, 4, 5]
        assert "unknown scenario" in got[0][1]
        assert "negative rate or latency" in got[1][1]
        assert "without a positive target_qps" in got[2][1]
        wrong = tmp_path / "wrong.csv"
        wrong.write_text("round,division,submitter\nv4.1,closed,x\n")
        with pytest.raises(SchemaMismatchError, match="wrong.csv: line 1"):
            s.ingest("mlperf", [wrong])
        assert s.con.execute("SELECT count(*) FROM mlperf_results").fetchone() == (1,)


def _row(cells: list[str]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


def test_which_rows_can_be_modelled(store):
    """The documented rules on the real v4.1 rows: every row either has a deployment or a
    reason, and each rule decides some row."""
    from servecast.simulator.mlperf import catalog_gpu, engine_family, model_row

    assert catalog_gpu("NVIDIA H100-SXM-80GB", 80.0) == ("h100-sxm", "")
    assert catalog_gpu("NVIDIA H200-SXM-141GB-CTS", 141.0) == ("h200-sxm", "")
    assert catalog_gpu("AMD Instinct MI300X-NPS1-SPX-192GB-750W", 192.0) == ("mi300x", "")
    assert catalog_gpu("NVIDIA L40S", 48.0) == ("l40s", "")
    gpu, why = catalog_gpu("NVIDIA GH200 Grace Hopper Superchip 144GB", 144.0)
    assert gpu is None and "differs from the catalog's gh200 (96 GB)" in why
    assert catalog_gpu("NVIDIA GeForce RTX 4090", 23.6)[0] is None
    assert engine_family("TensorRT 10.2.0, CUDA 12.4") == "trtllm"
    assert engine_family("vLLM 0.4.3+rocm614, PyTorch 2.3.0, ROCm 6.1.0") == "vllm"
    assert engine_family("PyTorch") is None
    cur = store.con.execute("SELECT * FROM mlperf_results")
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    got = [(r, model_row(r)) for r in rows]
    reasons = {m["reason"].split(":")[0].split(" (")[0] for _, m in got if m["reason"]}
    assert {"Server row without TTFT / TPOT limits", "no accelerator",
            "open division"} <= reasons
    for r, m in got:
        if m["reason"]:
            continue
        assert r["division"] == "closed" and r["scenario"] in ("Server", "Offline")
        assert m["tp"] * m["replicas"] == m["accelerators"] == \
            r["accelerators_per_node"] * r["nodes"]
        assert m["tp"] <= r["accelerators_per_node"]
        if r["scenario"] == "Server":
            assert r["ttft_limit_ms"] and r["tpot_limit_ms"]
        # an fp8 deployment keeps its KV cache in fp8 too (the module's rule)
        assert m["kv_cache_dtype"] == ("fp8" if m["dtype"] == "fp8" else "auto")
    # GPT-J's Server rows carry no TTFT / TPOT limits: none is modelled
    assert not [r for r, m in got if r["benchmark"].startswith("gptj")
                and r["scenario"] == "Server" and not m["reason"]]


def test_tp_rule_sizes_the_kv_cache_alike_for_every_family():
    """pick_tp: TP_KV_RULE's cache (vLLM's share, 2 bytes) for every family: GPT-J on two
    L40S gets TP 2 although one L40S's trtllm fp8 cache would hold the room it asks."""
    from servecast.simulator.deployment import Compiled, Deployment
    from servecast.simulator.mlperf import ROOM_REQUESTS, longest, pick_tp

    need = ROOM_REQUESTS * longest("mlperf-gptj")
    one = dict(model="gpt-j-6b", gpu="l40s", tp=1, dtype="fp8")
    assert Compiled(Deployment(**one, engine="trtllm", kv_cache_dtype="fp8")).memory[
        "kv_capacity_tokens"] >= need
    assert Compiled(Deployment(**one)).memory["kv_capacity_tokens"] < need
    assert pick_tp("gpt-j-6b", "l40s", "fp8", 2, 2, "mlperf-gptj") == 2
    assert pick_tp("gpt-j-6b", "l40s", "fp8", 3, 3, "mlperf-gptj") is None  # 3 divides no TP


def test_beam_width_is_mlperf_s_or_the_one_given():
    from servecast.simulator.mlperf import beam_width

    assert beam_width("gptj-99.9", None) == 4 and beam_width("gptj", None) == 4
    assert beam_width("llama2-70b-99", None) == 1
    assert beam_width("gptj-99") == 1 and beam_width("mixtral-8x7b", 2) == 2


def test_runs_last_what_mlperf_requires():
    """Offline: the replica's share of min_query_count, raised until the run lasts the
    minimum duration; Server: the arrivals of the duration at the rate."""
    import math

    from servecast.simulator import search
    from servecast.simulator.deployment import Deployment
    from servecast.simulator.mlperf import OFFLINE_MIN_QUERIES, offline_run, server_run

    c = search.compile_replica(Deployment(model="gpt-j-6b", gpu="h100-sxm", dtype="fp8",
                                          max_num_seqs=512))
    share = math.ceil(OFFLINE_MIN_QUERIES["gptj"] / 64)
    short = offline_run(c, "mlperf-gptj", "gptj-99", replicas=64, min_duration_s=1.0)
    assert short["requests"] == share and short["duration_s"] >= 1.0  # the count binds
    long = offline_run(c, "mlperf-gptj", "gptj-99.9", replicas=64,
                       min_duration_s=2 * short["duration_s"])
    assert long["requests"] > share and long["duration_s"] >= 2 * short["duration_s"]
    assert long["offline_rps"] == pytest.approx(long["requests"] / long["duration_s"])
    assert long["output_tokens_per_s"] > 30 * long["offline_rps"]  # >= 30 tokens each
    rate = 0.5 * long["offline_rps"]
    got = server_run(c, "mlperf-gptj", 2 * rate, replicas=2, duration_s=40.0)
    assert got["requests"] == pytest.approx(40.0 * rate, rel=0.25)
    assert 0 < got["mean_tpot_ms"] <= got["p99_tpot_ms"]


def test_server_run_length_follows_the_engine_familys_harness():
    """Rule "harness": TensorRT-LLM's harness runs Llama-2-70B Server for 2400 s (any
    accuracy suffix), every other family / benchmark LoadGen's 600 s; the default rule
    "loadgen" gives 600 s to all; an unknown rule is an input error."""
    from servecast.errors import InvalidInputError
    from servecast.simulator.mlperf import MIN_DURATION_S, server_seconds

    assert server_seconds("trtllm", "llama2-70b-99.9", "harness") == 2400.0
    assert server_seconds("trtllm", "llama2-70b", "harness") == 2400.0
    assert server_seconds("vllm", "llama2-70b-99", "harness") == MIN_DURATION_S == 600.0
    assert server_seconds("trtllm", "gptj-99", "harness") == 600.0
    assert server_seconds("trtllm", "mixtral-8x7b", "harness") == 600.0
    assert server_seconds("trtllm", "llama2-70b-99") == 600.0  # the default: loadgen
    with pytest.raises(InvalidInputError, match="harness"):
        server_seconds("trtllm", "llama2-70b", rule="long")


def test_gptj_lengths_are_the_published_counts_in_bpe_tokens():
    """mlperf-gptj's means are the conversion of the published word / character counts
    (benchmarks/mlperf_gptj_lengths.py on the shared prose), not CNN-DM's 781 words: more
    tokens than words in, GEN_LEN's 300 characters per summary out."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from servecast.simulator.benchmark_workloads import MLPERF

    script = Path(__file__).parents[1] / "benchmarks" / "mlperf_gptj_lengths.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    got = {k: float(v) for k, v in re.findall(r"^(input|output) mean: .* = ([\d.]+) tokens",
                                              out, re.M)}
    w = MLPERF["mlperf-gptj"]
    assert got == {"input": w.input_mean, "output": w.output_mean}
    per_word = float(re.search(r"BPE tokens per PTB word token: ([\d.]+)", out)[1])
    template = int(re.search(r"template BPE tokens .*: (\d+)", out)[1])
    assert per_word > 1 and template > 20  # BPE splits words; the template adds its own
    assert w.input_mean > 781 + template and w.output_min < w.output_mean < 4016878 / 13368
    bad = subprocess.run([sys.executable, str(script), "--replies", "0"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "--replies 0" in bad.stderr and not bad.stdout


def test_openorca_inputs_take_the_published_percentile_of_their_rank(data):
    """mlperf-llama2-70b / -mixtral-8x7b prompts follow the published per-sample input
    lengths of MLPerf's datasets (their percentiles), each drawn ShareGPT prompt keeping its
    rank; Mixtral's 4.8% over 1,024 tokens sit at the limit."""
    import numpy as np

    from servecast.simulator import workloads
    from servecast.simulator.benchmark_workloads import MLPERF

    share, _ = workloads.lengths("sharegpt", 20000, seed=4)
    for name, over in (("mlperf-llama2-70b", 0), ("mlperf-mixtral-8x7b", 717 / 15000)):
        w = MLPERF[name]
        table = np.array(w.input_percentiles)
        assert len(table) == 101 and (np.diff(table) >= 0).all()
        p, _ = workloads.lengths(name, 20000, seed=4)
        assert p.mean() == pytest.approx(np.minimum(
            table * w.input_mean / table.mean(), w.input_max).mean(), rel=0.03)
        for q in (10, 50, 90):
            assert np.percentile(p, q) == pytest.approx(table[q], rel=0.06)
        assert (p == w.input_max).mean() == pytest.approx(over, abs=0.01)
        assert (np.diff(p[np.argsort(share, kind="stable")]) >= 0).all()  # ranks kept
    assert MLPERF["mlperf-llama2-70b"].input_mean == pytest.approx(222.33, abs=0.01)


def test_gptj_prompts_hit_the_limit_as_often_as_published(data):
    """399 of MLPerf's 13,368 GPT-J prompts exceed 1,919 tokens (issue #1384): the draw
    puts that share at the limit while the untruncated prompts keep the published mean."""
    from servecast.simulator import workloads
    from servecast.simulator.benchmark_workloads import MLPERF, shaped_inputs

    w = MLPERF["mlperf-gptj"]
    x = shaped_inputs(w, workloads.pairs(data)[0])
    assert x.mean() == pytest.approx(w.input_mean, rel=1e-3)
    assert (x > w.input_max).mean() == pytest.approx(399 / 13368, abs=1e-3)
    p, _ = workloads.lengths("mlperf-gptj", 40000, seed=5)
    assert (p == 1919).mean() == pytest.approx(399 / 13368, abs=0.004)
    assert p.mean() == pytest.approx(w.input_mean, rel=0.02)
