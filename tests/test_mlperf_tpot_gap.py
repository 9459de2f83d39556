"""benchmarks/mlperf_tpot_gap.py's kernel check on the real aiconfigurator tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def gap(benchmark_module):
    """benchmarks/mlperf_tpot_gap.py as a module."""
    return benchmark_module("mlperf_tpot_gap")


@pytest.fixture(scope="module")
def h100_fp8(data):
    root = next((data / "gpu/aiconfigurator/vllm/h100_sxm").iterdir())
    g = pd.read_parquet(root / "gemm_perf.parquet")
    return g[g["gemm_dtype"] == "fp8"]


def test_measured_gemm_reads_interpolates_and_scales_the_table(gap, h100_fp8):
    g = h100_fp8
    row = g.iloc[len(g) // 2]
    m, n, k = int(row["m"]), int(row["n"]), int(row["k"])
    same = g[(g["n"] == n) & (g["k"] == k)].sort_values("m")
    assert gap._measured_gemm(g, m, n, k) == pytest.approx(
        float(same.loc[same["m"] == m, "latency"].iloc[0]))
    # between two measured m: between their latencies
    lo, hi = same.iloc[2], same.iloc[3]
    mid = int(np.sqrt(lo["m"] * hi["m"]))
    got = gap._measured_gemm(g, mid, n, k)
    assert min(lo["latency"], hi["latency"]) <= got <= max(lo["latency"], hi["latency"])
    # a shape the table lacks: the nearest one scaled by n x k (twice the n: twice the time)
    assert not ((g["n"] == 2 * n + 1) & (g["k"] == k)).any()
    assert gap._measured_gemm(g, m, 2 * n + 1, k) > gap._measured_gemm(g, m, n, k)


def test_kernels_table_prints_both_gpus_with_consistent_ratios(gap, capsys):
    gap.kernels_table(batches=(64, 256))
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| h100")
             or x.startswith("| b200")]
    assert [x.split("|")[1].strip() for x in lines] == ["h100-sxm"] * 2 + ["b200"] * 2
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for cell in cells[4:]:
            if cell == "-":  # TP 1: no all-reduce
                continue
            pair, ratio = cell.split(" (")
            measured, model = (float(v) for v in pair.split(" / "))
            assert measured > 0 and model > 0
            # the ms are printed to 3 decimals, the ratio from the unrounded ms
            assert float(ratio.rstrip(")")) == pytest.approx(measured / model, rel=0.06)
    assert lines[2].split("|")[-2].strip() == "-" and "/" in lines[0].split("|")[-2]


@pytest.mark.slow  # ingests the v4.1 CSV and compiles seven deployments
def test_kv_context_table_on_the_real_rows(gap, capsys):
    """Little's law on the real development Server rows: the KV tokens held against the
    capacity, and the largest prompt mean that fits, consistent with each other."""
    from capacity_mlperf import load_rows, split

    rows = load_rows()
    split(rows)
    gap.kv_context_table(rows, 5000)
    lines = [x for x in capsys.readouterr().out.splitlines()
             if x.startswith("| llama") or x.startswith("| mixtral")]
    assert len(lines) >= 5
    for line in lines:
        c = [x.strip() for x in line.strip("|").split("|")]
        held, cap, ratio = float(c[5].replace(",", "")), float(c[6].replace(",", "")), \
            float(c[7])
        mean, most = float(c[8]), float(c[9])
        assert ratio == pytest.approx(held / cap, abs=0.006)
        # over capacity exactly when the workload's prompts are longer than what fits
        assert (ratio > 1) == (most < mean)


@pytest.mark.slow  # ingests the v4.1 CSV and simulates one Offline run
def test_capacity_mlperf_given_factors_and_one_split(gap):
    """`capacity_mlperf.py --efficiency ... --rows held-out`: the factors parsed (a bad pair
    named), and only that split's rows predicted, tabled and counted in the medians."""
    from capacity_mlperf import Predictor, families, load_rows, medians, predict, split, tables

    from servecast.simulator.mlperf import model_row

    assert families(["trtllm=1.25", "vllm=0.8"]) == {"trtllm": 1.25, "vllm": 0.8}
    for bad in ("trtllm", "trtllm=fast", "=1.2", "vllm=0"):
        with pytest.raises(SystemExit, match=f"--efficiency '{bad}'"):
            families([bad])
    rows = load_rows()
    split(rows)
    for r in rows:
        r["m"] = model_row(r)
    offline = [r for r in rows if r["benchmark"] == "gptj-99" and r["scenario"] == "Offline"
               and not r["m"]["reason"] and r["m"]["gpu"] == "l40s"]
    picked = [next(r for r in offline if r["split"] == s) for s in ("dev", "held-out")]
    pred = Predictor(100, 1, 200, protocol="short", beams=1)
    predict(picked, pred, {"trtllm": 1.0}, only="held-out")
    dev, held = picked
    assert "pred_offline" not in dev and held["pred_offline"] > 0
    assert held["err_offline"] == pytest.approx(held["pred_offline"] /
                                                held["measured_offline"] - 1)
    text = tables(picked)
    assert held["submitter"] in text and dev["submitter"] not in text
    med = medians(picked)
    assert med["dev"]["offline"] == (None, 0) and med["held-out"]["offline"][1] == 1
    # the default, --beams mlperf, under --protocol short too: GPT-J's 4 beams, fewer
    # samples/s
    one = held["pred_offline"]
    predict([held], Predictor(100, 1, 200, protocol="short"), {"trtllm": 1.0},
            only="held-out")
    assert 0 < held["pred_offline"] < one


@pytest.mark.slow  # ingests the v4.1 CSV and simulates one deployment at two prompt scales
def test_operating_point_table_on_a_real_row(gap, capsys):
    """`--operating-point`: a development Server row with the KV cache relaxed, prompts x 1
    and x 0.5; shorter prompts serve more, and each concurrency is Little's law of its TPOT
    at the submitted QPS."""
    from capacity_mlperf import load_rows, split

    from servecast.simulator.mlperf import model_row

    rows = load_rows()
    split(rows)
    row = next(r for r in rows if r["scenario"] == "Server" and r["split"] == "dev"
               and r["benchmark"].startswith("mixtral") and not model_row(r)["reason"])
    gap.operating_point_table([row], {"trtllm": 1.0}, [1.0, 0.5], 200)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| mixtral")]
    assert len(lines) == 2
    cells = [[x.strip() for x in line.strip("|").split("|")] for line in lines]
    assert float(cells[1][2]) == pytest.approx(float(cells[0][2]) / 2, rel=0.01)
    assert float(cells[1][3]) > float(cells[0][3])  # Offline req/s with shorter prompts
    m = model_row(row)
    q = row["target_qps"] / m["replicas"]
    pairs = []
    for c in cells:
        assert float(c[4]) == pytest.approx(q, abs=0.005) and float(c[5]) > 0
        pairs += [tuple(float(v) for v in c[col].split(" / ")) for col in (6, 7)]
    # Little's law: concurrency / TPOT = QPS x mean output, the same in every cell (the
    # printed numbers are rounded to integers)
    per_ms = [conc / tpot for tpot, conc in pairs]
    assert all(tpot >= 5 for tpot, _ in pairs)
    assert max(per_ms) / min(per_ms) == pytest.approx(1, abs=0.25)
    measured_tpot = float(cells[0][7].split(" / ")[0])
    assert measured_tpot == pytest.approx(row["mean_tpot_ms"], abs=0.5)


def test_offline_batch_reports_the_limits_it_runs_against(gap):
    """`--beams`' batch columns on a real workload: a KV cache too small for the queue is
    nearly full, the tokens per iteration stay within the budget, and beams fill the KV
    cache with fewer requests than single sequences do."""
    from servecast.simulator import search
    from servecast.simulator.deployment import Deployment
    from servecast.simulator.workloads import lengths

    c = search.compile_replica(Deployment(model="gpt-j-6b", gpu="l40s", dtype="fp8",
                                          max_num_batched_tokens=4096))
    c.kv_blocks = 40 * 1100 // c.deployment.block_size  # about 40 requests at once
    prompt, output = lengths("mlperf-gptj", 300, seed=0)
    one, four = (gap.offline_batch(c, prompt, output, b) for b in (1, 4))
    for got in (one, four):
        assert 0.8 < got["kv_used"] <= 1.0
        assert 0 < got["tokens"] <= 4096
        assert 0 < got["attention_share"] < 1
    # at most what the cache holds of prompts alone; beams hold more tokens per request
    assert 20 < four["requests"] < one["requests"] <= 40 * 1100 / prompt.mean()


@pytest.mark.slow  # ingests the v4.1 CSV and simulates one deployment at two loads
def test_near_capacity_table_rises_with_the_load(gap, capsys):
    """`--near-capacity`: nearer the steady Offline rate, longer TTFT and TPOT and a larger
    batch; the submitted QPS placed on that scale."""
    from capacity_mlperf import load_rows, split

    from servecast.simulator.mlperf import model_row

    rows = load_rows()
    split(rows)
    row = next(r for r in rows if r["scenario"] == "Server" and r["split"] == "dev"
               and r["benchmark"].startswith("mixtral") and not model_row(r)["reason"])
    gap.near_capacity_table([row], {"trtllm": 1.0}, [0.5, 0.95], 400)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| mixtral"))
    c = [x.strip() for x in line.strip("|").split("|")]
    steady, share = float(c[2]), float(c[3])
    m = model_row(row)
    assert share == pytest.approx(row["target_qps"] / m["replicas"] / steady, abs=0.006)
    (ttft0, tpot0, conc0), (ttft1, tpot1, conc1) = (
        [float(v) for v in cell.replace(",", " /").split(" / ")] for cell in c[4:6])
    assert ttft1 > ttft0 and tpot1 > tpot0 and conc1 > conc0 > 0
