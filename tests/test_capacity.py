"""Capacity search, planning, the knee report and the capacity dashboard page, on h-sim's
engine with the physics step-time model, real workload shapes and a real Azure trace."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from servecast.analytics import interactive
from servecast.analytics.capacity import curve_figure, curve_frame, knee, write_capacity_report
from servecast.errors import InvalidInputError, UnknownNameError
from servecast.simulator import benchmark_workloads, search, workloads
from servecast.simulator.deployment import Deployment
from servecast.simulator.traces import load_requests
from servecast.simulator.workloads import poisson_arrivals

SHAREGPT = "llm/length_stats/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
SMALL = Deployment(model="llama-3.1-8b", gpu="h100-sxm")
SLO = search.SLO(ttft_ms=300, tpot_ms=30)


def servecast(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servecast.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small():
    return search.compile_replica(SMALL)


def test_workloads_follow_the_published_numbers(data):
    p, o = workloads.lengths("mlperf-llama2-70b", 20000, seed=3)
    assert p.max() <= 1024 and o.max() <= 1024 and o.min() >= 1
    assert o.mean() == pytest.approx(294.45, rel=0.02)  # MLPerf's tokens per sample
    p, o = workloads.lengths("mlperf-mixtral-8x7b", 20000, seed=3)
    assert o.mean() == pytest.approx(144.84, rel=0.02) and o.min() >= 2
    p, o = workloads.lengths("mlperf-gptj", 20000, seed=3)
    assert p.max() <= 1919 and 30 <= o.min() and o.max() <= 128
    gptj = benchmark_workloads.MLPERF["mlperf-gptj"]  # BPE tokens, not CNN-DM's words
    assert p.mean() == pytest.approx(gptj.input_mean, rel=0.02)
    assert o.mean() == pytest.approx(gptj.output_mean, rel=0.02)
    rows = list(csv.reader(open(data / SHAREGPT)))[1:]
    prompt = np.array([float(r[0]) for r in rows])
    p, o = workloads.lengths("sharegpt", 20000, seed=3)
    assert p.mean() == pytest.approx(prompt.mean(), rel=0.03)  # the file as recorded
    assert benchmark_workloads.longest("mlperf-llama2-70b") == 2048
    a, b = workloads.lengths("sharegpt", 50, seed=1), workloads.lengths("sharegpt", 50, seed=1)
    assert (a[0] == b[0]).all() and not (a[0] == workloads.lengths("sharegpt", 50, 2)[0]).all()
    assert "mlperf-mixtral-8x7b" in workloads.names()
    with pytest.raises(UnknownNameError, match="known workloads: mlperf-gptj"):
        workloads.lengths("openorca", 10)
    with pytest.raises(InvalidInputError, match="positive integer"):
        workloads.lengths("sharegpt", 0)
    gaps = np.diff(poisson_arrivals(20000, 5.0, seed=1))
    assert gaps.mean() == pytest.approx(0.2, rel=0.03)
    # `servecast simulate workload:NAME` draws the same registered workloads
    reqs = load_requests("workload:mlperf-gptj", num_prompts=500, rate=4.0)
    assert min(r.output_tokens for r in reqs) >= 30 and max(r.prompt_tokens for r in reqs) \
        <= 1919


def test_capacity_is_where_the_slo_breaks(small):
    cap = search.capacity(small, SLO, search.poisson_sample("sharegpt", 150), seeds=2)
    assert len(cap.per_seed) == 2 and cap.low <= cap.rate <= cap.high
    for seed, (rate, sat) in enumerate(zip(cap.per_seed, cap.saturation_per_seed,
                                           strict=True)):
        assert rate < sat
        mine = [p for p in cap.probes if p["seed"] == seed]
        at = [p for p in mine if p["rate"] == rate]
        assert at and at[0]["met"]  # the answer was simulated and holds
        assert at[0]["p99_ttft_ms"] <= 300 and at[0]["p99_tpot_ms"] <= 30
        above = [p["rate"] for p in mine if not p["met"] and p["rate"] > rate]
        # the next failing probe (or the Offline throughput) is within the tolerance
        assert min(above + [sat]) <= rate * 1.1
    # early stopping: a seed whose answer is the first one's (the same requests here)
    # takes 2 probes around it instead of a full bisection
    same = search.poisson_sample("sharegpt", 150)
    twice = search.capacity(small, SLO, lambda seed: same(0), seeds=2)
    n0, n1 = (sum(p["seed"] == s for p in twice.probes) for s in (0, 1))
    assert n0 >= 5 and n1 == 2 and twice.per_seed[1] == pytest.approx(twice.per_seed[0],
                                                                         rel=0.02)
    # a tighter SLO gives a lower capacity on the same seeds
    tight = search.capacity(small, search.SLO(ttft_ms=300, tpot_ms=12),
                            search.poisson_sample("sharegpt", 150), seeds=2)
    assert tight.rate < cap.rate


def test_a_probe_stops_once_its_p99_certainly_breaks(small):
    prompt, output = workloads.lengths("sharegpt", 400, seed=4)
    sat = search.saturation_rps(small, prompt, output)
    for rate, breaks in ((0.3 * sat, False), (1.5 * sat, True)):
        arrive = workloads.poisson_arrivals(400, rate, seed=4)
        full = search.probe(small, arrive, prompt, output)
        cut = search.probe(small, arrive, prompt, output, SLO)
        assert SLO.met(full) is not breaks and cut["stopped"] is breaks
        if not breaks:  # nothing to stop: the same run
            assert cut == {**full, "stopped": False}
            continue
        # stopped: every latency a lower bound of the full run's, the SLO already broken
        assert not SLO.met(cut) and cut["makespan_s"] < full["makespan_s"]
        for k in ("p99_ttft_ms", "p99_tpot_ms", "mean_ttft_ms", "p50_tpot_ms"):
            assert cut[k] <= full[k] + 1e-9
        limit = {"p99_ttft_ms": SLO.ttft_ms, "p99_tpot_ms": SLO.tpot_ms}
        assert any(cut[k] > v for k, v in limit.items())


def test_a_duration_probe_runs_what_arrives_in_its_window():
    sample = search.poisson_sample("sharegpt", 3000, replicas=2, duration_s=60.0,
                                   min_requests=50)
    prompt, output, arrive = sample(0)
    assert len(prompt) == len(output) == 3000  # the pool
    for rate in (4.0, 20.0):  # req/s over 2 replicas: rate / 2 each
        a, every = arrive(rate), poisson_arrivals(3000, rate / 2, 0)
        assert (a == every[:len(a)]).all() and a[-1] <= 60.0 < every[len(a)]
        assert len(a) == pytest.approx(rate / 2 * 60, rel=0.2)
    assert len(arrive(0.1)) == 50  # ~3 arrive in 60 s: at least min_requests
    assert len(arrive(1000.0)) == 3000  # the pool runs out first: all of it
    with pytest.raises(InvalidInputError, match="duration_s=0 must be > 0 s"):
        search.poisson_sample("sharegpt", 10, duration_s=0)


def test_capacity_bounded_by_the_steady_rate_with_duration_probes(small):
    prompt, output = workloads.lengths("sharegpt", 1500, seed=0)
    offline, steady = search.offline_rates(small, prompt, output)
    # Offline: the requests over the replay's time to the last completion, both ways
    makespan = search.run(small, np.zeros(1500), prompt, output)["makespan_s"]
    assert offline == pytest.approx(1500 / makespan)
    assert search.saturation_rps(small, prompt, output) == offline
    # 1500 requests, batches of 256: the first wave and the drain weigh little
    assert steady == pytest.approx(offline, rel=0.1)
    sample = search.poisson_sample("sharegpt", int(steady * 20 * 1.1) + 100, duration_s=20.0)
    cap = search.capacity(small, SLO, sample, seeds=1, upper_rps=steady)
    assert cap.saturation_rps == steady and cap.rate < steady
    arrive = sample(0)[2]
    for p in cap.probes:  # each probe simulated what arrives within 20 s at its rate
        assert p["requests"] == len(arrive(p["rate"]))
    assert len({p["requests"] for p in cap.probes}) == len(cap.probes)  # more at higher rates
    held = [p for p in cap.probes if p["rate"] == cap.rate][0]
    assert held["met"] and held["p99_tpot_ms"] <= SLO.tpot_ms


def test_an_fp8_kv_cache_holds_twice_the_tokens():
    from servecast.simulator.deployment import Compiled

    big = Deployment(model="llama-2-70b", gpu="h100-sxm", tp=2, dtype="fp8")
    auto, fp8 = Compiled(big), Compiled(replace(big, kv_cache_dtype="fp8"))
    assert fp8.kv_blocks == 2 * auto.kv_blocks
    assert fp8.memory["kv_bytes_per_token"] == auto.memory["kv_bytes_per_token"] / 2
    # the step time is the same: only the capacity changes
    assert fp8.step_ms([512], [0], [900] * 64) == auto.step_ms([512], [0], [900] * 64)
    with pytest.raises(InvalidInputError, match="kv_cache_dtype='int4': use one of auto, fp8"):
        Compiled(replace(big, kv_cache_dtype="int4"))


def test_an_slo_no_rate_meets_names_the_best_p99(small):
    with pytest.raises(search.SLOUnreachableError) as e:
        search.capacity(small, search.SLO(tpot_ms=1.0), search.poisson_sample("sharegpt", 60),
                        seeds=1)
    msg = str(e.value)
    assert "no rate meets p99 TPOT <= 1 ms" in msg and "lowest rate probed" in msg
    tpot = float(re.search(r"and p99 TPOT(?: at least)? ([\d.]+) ms", msg).group(1))
    assert tpot > 1.0  # the p99 reached (a lower bound when stopped), over the limit
    with pytest.raises(InvalidInputError, match="give an SLO"):
        search.SLO()
    with pytest.raises(InvalidInputError, match="ttft_ms=-5"):
        search.SLO(ttft_ms=-5)
    r = servecast("capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tpot-ms", "1",
                  "--requests", "60", "--seeds", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error: no rate meets p99 TPOT <= 1 ms" in r.stderr and "p99 TTFT is" in r.stderr


@pytest.mark.slow  # three CLI processes
def test_model_that_does_not_fit_and_unknown_names():
    with pytest.raises(InvalidInputError, match="does not fit l40s's 48 GB.*raise TP"):
        search.compile_replica(Deployment(model="llama-2-70b", gpu="l40s", tp=1))
    r = servecast("capacity", "--model", "llama-2-70b", "--gpu", "l40s", "--ttft-ms", "2000")
    assert r.returncode == 2 and "does not fit" in r.stderr and "Traceback" not in r.stderr
    r = servecast("capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--ttft-ms",
                  "500", "--workload", "openorca")
    assert r.returncode == 2 and "unknown workload 'openorca'" in r.stderr
    r = servecast("capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--ttft-ms",
                  "500", "--kv-cache-dtype", "int4")
    assert r.returncode == 2 and "kv_cache_dtype='int4': use one of auto, fp8" in r.stderr


def test_plan_sizes_each_gpu_type():
    rows = search.plan(Deployment(model="llama-2-70b", dtype="fp8"), ["l40s", "h100-sxm"],
                       search.SLO(ttft_ms=2000, tpot_ms=200), rate=6.0,
                       workload="mlperf-llama2-70b", requests=120, seeds=1, tps=(1, 2, 4),
                       price_per_gpu_hour={"h100-sxm": 2.5})
    by = {(r["gpu"], r["tp"]): r for r in rows}
    assert by[("l40s", 1)]["gpus"] is None and "does not fit" in by[("l40s", 1)]["reason"]
    for r in rows:
        if r["gpus"]:
            assert r["gpus"] == r["replicas"] * r["tp"]
            assert r["replicas"] == int(np.ceil(6.0 / r["replica_rps"]))
    best = {r["gpu"]: r for r in rows if r["best"]}
    assert set(best) == {"l40s", "h100-sxm"}
    for gpu, b in best.items():
        assert b["gpus"] == min(r["gpus"] for r in rows if r["gpu"] == gpu and r["gpus"])
    assert best["h100-sxm"]["cost_per_hour"] == pytest.approx(best["h100-sxm"]["gpus"] * 2.5)
    assert best["l40s"]["cost_per_hour"] is None  # no price given for it


@pytest.mark.slow
def test_plan_cli():
    r = servecast("plan", "--model", "llama-3.1-8b", "--gpu", "l4", "--gpu", "h100-sxm",
                  "--rate", "4", "--ttft-ms", "1000", "--tpot-ms", "100", "--tps", "1,2",
                  "--requests", "80", "--seeds", "1", "--price", "h100-sxm=2.5")
    assert r.returncode == 0, r.stderr
    assert "h100-sxm:" in r.stdout and "per hour" in r.stdout and "l4:" in r.stdout
    r = servecast("plan", "--model", "llama-3.1-8b", "--gpu", "l4", "--ttft-ms", "1000")
    assert r.returncode == 2 and "give the load: --rate" in r.stderr
    r = servecast("plan", "--model", "llama-3.1-8b", "--gpu", "l4", "--rate", "4",
                  "--ttft-ms", "1000", "--price", "h100-sxm=2.5")
    assert r.returncode == 2 and "not among the --gpu types" in r.stderr
    r = servecast("plan", "--model", "llama-3.1-8b", "--gpu", "l4", "--rate", "4",
                  "--ttft-ms", "1000", "--price", "l4=cheap")
    assert r.returncode == 2 and "GPU=PRICE_PER_GPU_HOUR" in r.stderr


def test_knee_report(small, tmp_path):
    sample = search.poisson_sample("sharegpt", 120)
    curve = search.load_curve(small, sample, seed=0)
    df = curve_frame(curve)
    assert df.height == 10 and df["rate"].is_sorted()
    assert df["p99_ttft_ms"][-1] > df["p99_ttft_ms"][0]  # latency grows with load
    k = knee(curve, metric="p99_ttft_ms", factor=2.0)
    assert k is None or k["p99_ttft_ms"] > 2 * df["p99_ttft_ms"][0]
    assert knee(curve, "p99_ttft_ms", factor=1e9) is None
    with pytest.raises(InvalidInputError, match="factor"):
        knee(curve, factor=1.0)
    with pytest.raises(InvalidInputError, match="missing p99_tpot_ms"):
        curve_frame([{"rate": 1.0, "p99_ttft_ms": 2.0}])
    fig = curve_figure(curve, ttft_ms=300, tpot_ms=30, capacity_rps=df["rate"][5])
    assert len(fig.axes) == 2
    cap = {"rate": 1.5, "low": 1.4, "high": 1.6, "ttft_ms": 300, "tpot_ms": 30,
           "saturation_rps": 2.0}
    path = write_capacity_report(curve, {"model": "llama-3.1-8b", "GPU": "h100-sxm"}, cap,
                                 tmp_path / "r" / "knee.html")
    html = path.read_text()
    assert "data:image/png;base64," in html and "p99 TTFT &lt;= 300 ms" in html
    assert html.count("<tr>") >= 10 + 1 + 6  # curve rows + header + key numbers
    chart = interactive.load_curve(df, ttft_ms=300, tpot_ms=30).to_dict()
    assert len(chart["hconcat"]) == 2


@pytest.mark.slow
def test_capacity_cli_on_a_trace_with_report(store_of, tmp_path, data):
    store = store_of(("azure-llm", "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv",
                      "code"))
    store.con.execute("CHECKPOINT")
    db = store.path
    store.close()
    report, out = tmp_path / "knee.html", tmp_path / "cap.json"
    r = servecast("capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--trace", "code",
                  "--replicas", "16", "--seeds", "2", "--ttft-ms", "1000", "--tpot-ms", "60",
                  "--db", db, "--report", report, "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    rows = list(csv.DictReader(open(data / "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv")))
    assert res["source"] == "trace code" and len(res["per_seed"]) == 2
    assert "trace rate x" in r.stdout and res["rate"] < res["saturation_rps"]
    # each probe simulates the one replica's share of the trace's 8,819 requests
    assert all(abs(p["requests"] - len(rows) / 16) < 0.1 * len(rows) / 16
               for p in res["probes"])
    assert len(res["curve"]) == 10 and report.read_text().startswith("<!DOCTYPE html>")
    r = servecast("capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--trace",
                  "nope", "--ttft-ms", "1000", "--db", db)
    assert r.returncode == 2 and "trace 'nope' has no LLM requests" in r.stderr
    # plan the same trace at 8x its rate: one replica's capacity, then checked on its share
    arrival = [datetime.fromisoformat(r["TIMESTAMP"][:26]).timestamp() for r in rows]
    fast = 8 * (len(rows) - 1) / (max(arrival) - min(arrival))
    r = servecast("plan", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--trace", "code",
                  "--rate", fast, "--tps", "1", "--seeds", "1", "--ttft-ms", "1000",
                  "--tpot-ms", "60", "--db", db)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("h100-sxm: "))
    replicas = int(line.split("= ")[1].split(" replicas")[0])
    per_replica = res["rate"] / 16  # what one of the 16 replicas sustained above
    assert replicas >= 2 and 0.5 <= replicas / (fast / per_replica) <= 2


@pytest.mark.slow
def test_capacity_dashboard_page():
    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parent.parent / "app" / "pages" / "8_Capacity.py"
    at = AppTest.from_file(str(page), default_timeout=600).run()
    assert not at.exception and at.info  # waits for the click
    at.sidebar.select_slider(key="cap_n").set_value(100)
    at.sidebar.select_slider(key="cap_s").set_value(1)
    at.button(key="cap_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    first = {m.label: m.value for m in at.metric}
    assert "capacity (req/s)" in first and "TTFT knee (req/s)" in first
    assert first["max batch"] == "256"
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) == 1 and len(specs[0]["hconcat"]) == 2
    assert at.dataframe and at.dataframe[0].value.shape[0] == 10
    # an SLO no rate meets: the page says why instead of failing
    at.sidebar.number_input(key="cap_tpot").set_value(1.0)
    at.button(key="cap_run").click().run()
    assert not at.exception and "no rate meets" in at.error[0].value
    # the max batch tuned: no lower a capacity than the default's, and the cap it chose
    at.sidebar.number_input(key="cap_tpot").set_value(200.0)
    at.sidebar.selectbox(key="cap_b").set_value("auto")
    at.button(key="cap_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    tuned = {m.label: m.value for m in at.metric}
    assert float(tuned["capacity (req/s)"].replace(",", "")) >= float(
        first["capacity (req/s)"].replace(",", ""))
    assert tuned["max batch"] != "256" or tuned["capacity (req/s)"] == first[
        "capacity (req/s)"]
