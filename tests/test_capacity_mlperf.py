"""benchmarks/capacity_mlperf.py's knee and conditioning columns on a real MLPerf row, run
by the real simulator under MLPerf's run lengths."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def cap(benchmark_module):
    """benchmarks/capacity_mlperf.py as a module."""
    return benchmark_module("capacity_mlperf")


@pytest.fixture(scope="module")
def rows(cap):
    """Every v4.1 row with its deployment (the mlperf rules) and split."""
    from servecast.simulator.mlperf import model_row
    rows = cap.load_rows()
    cap.split(rows)
    for r in rows:
        r["m"] = model_row(r)
    return rows


@pytest.mark.slow  # ingests the v4.1 CSV, one Offline run and one capacity search of 600 s
def test_knee_of_a_tpot_bound_row_holds_its_tpot_limit(cap, rows):
    """A Llama-2-70B Server row on L40S (the fewest requests per 600 s probe of the
    TPOT-bound rows: the measured p99 TPOT nearer its limit than the p99 TTFT): the knee
    columns come from the search's own probe at the predicted max QPS, which holds the TPOT
    limit and sits below the probe that broke it; the conditioning runs bracket the
    submitted QPS; the tables and summaries carry them beside the issue's metric."""
    row = next(r for r in rows if r["scenario"] == "Server" and not r["m"]["reason"]
               and r["benchmark"].startswith("llama2-70b") and r["m"]["gpu"] == "l40s"
               and r["m"]["engine"] == "trtllm")
    pred = cap.Predictor(800, 1, 2000, max_num_seqs=cap.MAX_SEQS)  # the KV bounds the batch
    cap.predict([row], pred, {"trtllm": 1.0})
    assert row["bound"] == "TPOT"  # measured: p99 TPOT / limit > p99 TTFT / limit
    for k in cap.KNEE_KEYS:
        assert row[f"knee_{k}"] > 0 and row[f"pred_{k}"] > 0
    # the knee is the search's highest holding probe: its rate is the predicted max QPS,
    # no further simulation reads it, and the next probe above broke the TPOT limit
    (search,) = pred._cap.values()  # rates per replica
    probes = len(search.probes)
    assert pred.knee(row["m"], search.slo, 1.0)["qps"] == row["knee_qps"] == row["pred_qps"]
    assert len(search.probes) == probes
    assert row["knee_bound"] == "TPOT"
    assert row["knee_mean_tpot_ms"] <= row["knee_p99_tpot_ms"] <= row["tpot_limit_ms"]
    assert row["knee_p99_ttft_ms"] <= row["ttft_limit_ms"]
    above = min((p for p in search.probes if not p["met"]), key=lambda p: p["rate"])
    assert above["rate"] * row["m"]["replicas"] > row["pred_qps"]
    assert above["p99_tpot_ms"] > row["tpot_limit_ms"]
    # the error's two parts add up to it, and the conditioning runs rise with the load
    assert row["part_qps"] + row["part_knee"] == pytest.approx(math.log1p(row["err_tpot"]))
    assert row["err_knee_tpot"] == pytest.approx(row["knee_mean_tpot_ms"] /
                                                 row["mean_tpot_ms"] - 1)
    assert 0 < row["tpot_lo_ms"] < row["tpot_hi_ms"]
    assert row["dlog_tpot"] == pytest.approx(
        math.log(row["tpot_hi_ms"] / row["tpot_lo_ms"]) / math.log(1.05 / 0.95))
    assert set(pred.cpu_s) == {"offline", "search", "at_qps", "conditioning"}
    text = cap.tables([row])
    assert "at the predicted knee" in text and f"{row['knee_mean_tpot_ms']:.1f}" in text
    med = cap.medians([row])[row["split"]]
    assert med["knee_tpot"] == (pytest.approx(100 * abs(row["err_knee_tpot"])), 1)
    assert med["mean_tpot"] == (pytest.approx(100 * abs(row["err_tpot"])), 1)
    summary = cap.conditioning([row])
    assert summary[row["benchmark"]]["rows"] == 1
    assert summary["all"]["dlog_tpot"] == pytest.approx(row["dlog_tpot"])
    assert summary["all"]["capacity_led"] == (abs(row["part_qps"]) > abs(row["part_knee"]))


def test_a_row_without_a_knee_keeps_its_measured_bound(cap):
    """A Server row where no rate meets the SLO has no knee: its knee columns are None,
    its measured bound still named; a search that no probe stopped ended at its Offline
    bound."""
    r = {"p99_ttft_ms": 1900.0, "p99_tpot_ms": 120.0, "ttft_limit_ms": 2000.0,
         "tpot_limit_ms": 200.0, "mean_tpot_ms": 100.0, "pred_mean_tpot_ms": 80.0}
    got = cap.knee_columns(r, None)
    assert got["bound"] == "TTFT" and got["knee_bound"] is None
    assert all(got[f"knee_{k}"] is None for k in cap.KNEE_KEYS)
    assert got["err_knee_tpot"] is None and got["part_qps"] is None
    assert cap.breaks(None, None) == "throughput"


@pytest.mark.slow  # the tuning: several capacity searches of 600 s probes
def test_server_rows_run_at_the_tuned_max_batch(cap, rows, monkeypatch):
    """By default a Server row's runs use the max_num_seqs of the highest simulated
    capacity (`max_batch.tune`): its max QPS is no lower than at MAX_SEQS, the knee holds
    both limits, and the runs at the submitted QPS use the tuned cap. Each cap is compiled
    once: the tuning starts from the Offline run's replica at MAX_SEQS."""
    row = next(r for r in rows if r["scenario"] == "Server" and not r["m"]["reason"]
               and r["benchmark"].startswith("llama2-70b") and r["m"]["gpu"] == "l40s"
               and r["m"]["engine"] == "trtllm")
    fixed = dict(row)
    cap.predict([fixed], cap.Predictor(800, 1, 2000, max_num_seqs=cap.MAX_SEQS),
                {"trtllm": 1.0})
    made, compile_replica = [], cap.search.compile_replica
    monkeypatch.setattr(cap.search, "compile_replica", lambda d, rt=None: made.append(
        d.max_num_seqs) or compile_replica(d, rt))
    pred = cap.Predictor(800, 1, 2000)
    cap.predict([row], pred, {"trtllm": 1.0})
    assert cap.MAX_SEQS in made and len(made) == len(set(made))
    (tuned,) = pred._tuned.values()
    assert row["max_num_seqs"] == tuned.max_num_seqs == tuned.compiled.deployment.max_num_seqs
    assert row["pred_qps"] >= fixed["pred_qps"] > 0
    assert tuned.rates[cap.MAX_SEQS] * row["m"]["replicas"] == fixed["pred_qps"]
    assert f"{tuned.max_num_seqs}: " in row["max_num_seqs_tried"]
    assert row["knee_p99_tpot_ms"] <= row["tpot_limit_ms"]
    assert row["knee_p99_ttft_ms"] <= row["ttft_limit_ms"]
    # the run at the submitted QPS and the conditioning runs: at the tuned cap only
    assert {k[0][-1] for k in pred._at} == {tuned.max_num_seqs}
    assert f"({row['m']['tp']}, {tuned.max_num_seqs})" in cap.tables([row])


def server_row(framework: str) -> dict:
    """A closed Llama-2-70B Server row on 8 x H100-SXM run by `framework`'s engine."""
    from servecast.simulator.mlperf import model_row
    return model_row({"division": "closed", "benchmark": "llama2-70b-99",
                      "scenario": "Server", "accelerators_per_node": 8, "nodes": 1,
                      "accelerator": "NVIDIA H100-SXM-80GB", "accelerator_memory_gb": 80,
                      "framework": framework, "ttft_limit_ms": 2000.0,
                      "tpot_limit_ms": 200.0})


def test_server_runs_last_the_harness_duration(cap):
    """Protocol mlperf: a TensorRT-LLM Llama-2-70B row's run at a QPS spans its harness's
    2400 s of arrivals with `server_rule="harness"`, a vLLM row's LoadGen's 600 s; the
    default rule ("loadgen") gives the TensorRT-LLM row 600 s (real simulator, a light
    load)."""
    rate = 0.25  # req/s per replica: 600 s hold 150 arrivals, above min_query_count
    got = {}
    for name, framework, rule in (("trt", "TensorRT 10.2", {"server_rule": "harness"}),
                                  ("vllm", "vLLM 0.5.2", {"server_rule": "harness"}),
                                  ("trt600", "TensorRT 10.2", {})):
        m = server_row(framework)
        pred = cap.Predictor(800, 1, 2000, max_num_seqs=64, **rule)
        got[name] = (pred.server_s(m), pred.at_qps(m, rate * m["replicas"], 1.0, cap=64))
    assert [s for s, _ in got.values()] == [2400.0, 600.0, 600.0]
    for seconds, run in got.values():
        assert run["requests"] == pytest.approx(seconds * rate, rel=0.15)
        assert run["mean_tpot_ms"] > 0


def test_a_bad_step_model_exits_2_naming_it(cap, tmp_path, capsys):
    """`--step-model` of a folder that holds no saved model: exit 2 before any row runs,
    naming the flag and the folder."""
    with pytest.raises(SystemExit) as e:
        cap.main(["--step-model", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--step-model" in err and str(tmp_path) in err and "model_card.json" in err


@pytest.mark.slow  # fits the registry's small step-time model, ingests the v4.1 CSV
def test_the_step_model_reaches_every_compiled_replica(cap, rows, fitted_kind):
    """A Predictor given a step-time runtime compiles every replica with it (the Offline
    run, the capacity search and the max_num_seqs tuning, the runs at the submitted QPS):
    each carries the model's overhead (the fixture's 1.5 ms constant; physics only: 0), and
    a row's Offline throughput and max QPS differ from physics only's."""
    from servecast.simulator.deployment import load_runtime

    *_, path = fitted_kind("step_time")
    runtime = load_runtime(path)
    picked = [next(r for r in rows if r["scenario"] == scen and not r["m"]["reason"]
                   and r["benchmark"].startswith("llama2-70b") and r["m"]["gpu"] == "l40s")
              for scen in ("Offline", "Server")]
    got = {}
    for name, rt in (("physics", None), ("model", runtime)):
        pred = cap.Predictor(100, 1, 200, protocol="short", runtime=rt)
        done = [dict(r) for r in picked]
        cap.predict(done, pred, {"trtllm": 1.0})
        got[name] = (done[0]["pred_offline"], done[1]["pred_qps"])
        assert len(pred._compiled) > 1  # the Offline run's and the tuned caps'
        for c in [*pred._compiled.values(), *(t.compiled for t in pred._tuned.values())]:
            assert c.overhead["step_ms"] == (1.5 if rt else 0.0)
    assert got["model"][0] != pytest.approx(got["physics"][0], rel=1e-3)
    assert got["model"][1] != pytest.approx(got["physics"][1], rel=1e-3)
    model = cap.step_model(path, runtime)
    assert cap.step_model(None, None) is None and "physics only" in cap.step_model_text(None)
    assert model["path"] == str(path) and model["other"]["step_ms"] == 1.5
    assert f"{path} (engine overheads: any other family 1.5 ms)" in cap.step_model_text(model)
