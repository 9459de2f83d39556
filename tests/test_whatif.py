"""What-if simulator: known answers on tiny traces, policy ordering on real Azure requests."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from servecast.errors import InvalidInputError
from servecast.simulator import POLICIES, ServingConfig, simulate, whatif


def test_single_request_known_answer():
    cfg = ServingConfig(iter_base_ms=10.0, iter_token_ms=0.5, iter_kv_ms=0.001)
    r = simulate(np.array([2.0]), np.array([100]), np.array([5]), config=cfg)
    prefill = 0.010 + 0.0005 * 100
    decode = 4 * (0.010 + 0.0005 * 1) + 1e-6 * (101 + 102 + 103 + 104)  # KV read grows
    assert r["ttft_s"][0] == pytest.approx(prefill)
    assert r["jct_s"][0] == pytest.approx(prefill + decode)
    assert r["preemptions"] == 0


def test_preempted_request_keeps_its_tokens():
    # two 10-token prompts, 10 output tokens each, 25 KV tokens, 10 ms per iteration:
    # at iteration 3 both need 13 -> B (newest) is preempted after streaming 2 tokens; A
    # finishes at iteration 10; B is re-admitted at iteration 11 (prefill of 12 tokens, which
    # yields token 3) and needs 7 more -> done at iteration 18 (20 if it had to start over)
    cfg = ServingConfig(iter_base_ms=10.0, iter_token_ms=0.0, iter_kv_ms=0.0, kv_tokens=25)
    r = simulate(np.zeros(2), np.array([10, 10]), np.array([10, 10]), config=cfg)
    assert r["preemptions"] == 1
    assert r["jct_s"] == pytest.approx([0.10, 0.18])
    assert r["ttft_s"] == pytest.approx([0.01, 0.01])
    assert r["prefill_tokens"] == 10 + 10 + 12
    with pytest.raises(InvalidInputError, match="preempt"):
        simulate(np.zeros(2), np.array([10, 10]), np.array([10, 10]),
                 config=ServingConfig(preempt="oldest"))


def test_sjf_and_preemption_on_a_burst():
    rng = np.random.default_rng(0)
    n = 300
    arr = np.zeros(n)
    prompt = rng.integers(50, 500, n)
    out = rng.lognormal(4.5, 1.0, n).astype(int) + 1
    cfg = ServingConfig(kv_tokens=20_000, max_batch=32)
    fcfs = simulate(arr, prompt, out, config=cfg)
    sjf = simulate(arr, prompt, out, priority=out, config=cfg)
    assert sjf["jct_s"].mean() < 0.8 * fcfs["jct_s"].mean()
    tight = ServingConfig(kv_tokens=6_000, max_batch=256)
    assert simulate(arr, prompt, out, config=tight)["preemptions"] > 0
    worst = simulate(arr, prompt, out, reserve=np.full(n, out.max()), config=tight)
    assert worst["preemptions"] == 0
    assert np.all(np.isfinite(worst["jct_s"]))


def test_aging_bounds_the_wait_of_a_long_request():
    # a long request (predicted 2000 tokens) arrives at 0.05 s into a stream of short ones
    # (one every 0.1 s, 0.2 s of service each, one running request at a time: the queue
    # grows): SJF serves it after every short one (~80 s); with 100 tokens/s of aging it
    # overtakes the short ones that arrive 19.85+ s after it (~42 s)
    n = 400
    arr = np.r_[0.05, np.arange(n - 1) * 0.1]
    prompt, out = np.full(n, 10), np.r_[200, np.full(n - 1, 20)]
    pred = np.r_[2000.0, np.full(n - 1, 20.0)]
    cfg = ServingConfig(iter_base_ms=10.0, iter_token_ms=0.0, iter_kv_ms=0.0, max_batch=1)
    sjf = simulate(arr, prompt, out, priority=pred, config=cfg)
    aged = simulate(arr, prompt, out, priority=pred + 100.0 * arr, config=cfg)
    assert sjf["jct_s"][0] > 75.0  # served last
    assert aged["jct_s"][0] < 0.6 * sjf["jct_s"][0]


@pytest.mark.slow  # the Azure conversation trace
def test_whatif_on_azure_conversation(data):
    import tempfile
    from pathlib import Path

    from servecast.config import data_dir  # noqa: F401 - real data via the fixture
    from servecast.predictors.output_length import create
    from servecast.predictors.output_length.metrics import split
    from servecast.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.duckdb")
        store.ingest("azure-llm", [data / "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"],
                     trace="azure_conv")
        df = store.requests("azure_conv").pl()
        store.close()
    train, test, _ = split(df)
    test = test[:1500]
    pred = create("metadata", n_estimators=30, learning_rate=0.1).fit(train).predict(test)
    res = whatif(test, pred["p50"].to_numpy(), pred["p90"].to_numpy(), load=0.9)
    assert res["policy"].to_list() == list(POLICIES)
    r = {row["policy"]: row for row in res.iter_rows(named=True)}
    # shortest-first cuts the median wait; reserving KV by predicted p90 does not preempt
    # more than admitting on the prompt alone (with vLLM's 1% watermark both are rare)
    assert r["sjf_oracle"]["p50_jct_s"] < r["fcfs"]["p50_jct_s"]
    assert r["sjf_pred"]["p50_jct_s"] < r["fcfs"]["p50_jct_s"]
    assert r["sjf_p90"]["p50_jct_s"] < r["fcfs"]["p50_jct_s"]
    assert r["sjf_pred_aging"]["p50_jct_s"] < r["fcfs"]["p50_jct_s"]
    assert r["kv_p90"]["preemptions"] <= r["fcfs"]["preemptions"]
    assert r["kv_worst"]["preemptions"] == 0
    assert (res["arrival_rps"] < res["capacity_rps"]).all()
    with pytest.raises(InvalidInputError, match="unknown policy"):
        whatif(test, pred["p50"].to_numpy(), pred["p90"].to_numpy(), policies=("lifo",))
    with pytest.raises(InvalidInputError, match="arrival_s"):
        whatif(pl.DataFrame({"prompt_tokens": [1]}), [1.0], [1.0])


def test_reservation_larger_than_the_budget_does_not_stall():
    # worst-case reservation above the KV budget: an idle engine still admits the request
    cfg = ServingConfig(kv_tokens=1_000, max_output=5_000)
    r = simulate(np.array([0.0, 0.0, 1.0]), np.array([100, 900, 50]), np.array([10, 50, 5]),
                 reserve=np.full(3, 5_000.0), config=cfg)
    assert np.all(np.isfinite(r["jct_s"]))
    with pytest.raises(InvalidInputError, match="kv_tokens"):
        simulate(np.zeros(1), np.array([990]), np.array([20]), config=cfg)


@pytest.fixture(scope="module")
def azure_conv(store_of):
    """The Azure conversation trace in a store of its own."""
    return store_of(("azure-llm", "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
                     "azure_conv"))


@pytest.mark.slow
def test_restated_share_over_loads_and_seeds(azure_conv):
    from servecast.simulator import heldout, share_summary, whatif_share

    test, p50, p90 = heldout(azure_conv, "azure_conv", max_rows=2500)
    reps = whatif_share(test, p50, p90, loads=(0.9, 0.95), seeds=2,
                        policies=("sjf_pred", "sjf_oracle"))
    assert reps.height == 2 * 2 * 2
    oracle = reps.filter(pl.col("policy") == "sjf_oracle")
    assert oracle["share"].to_list() == pytest.approx([1.0] * 4)  # the oracle reaches itself
    pred = reps.filter(pl.col("policy") == "sjf_pred")
    # the seeds draw different queues: the FCFS replays differ (same load, other seed)
    assert pred.filter(pl.col("load") == 0.9)["fcfs_jct_s"].n_unique() == 2
    assert (pred["share"] > 0).all() and (pred["oracle_jct_s"] < pred["fcfs_jct_s"]).all()
    s = {r["policy"]: r for r in share_summary(reps).iter_rows(named=True)}
    p = s["sjf_pred"]
    assert p["replays"] == 4
    assert p["ci_low"] < p["mean_share"] < p["ci_high"]
    assert p["min_share"] <= p["mean_share"] <= p["max_share"] < 1.0 + 1e-9
    assert s["sjf_oracle"]["mean_share"] == pytest.approx(1.0)


@pytest.mark.slow  # the Azure conversation trace
def test_no_queue_gives_no_share_and_says_why(azure_conv):
    from servecast.simulator import heldout, no_gain_reason, sjf_gain, whatif_share

    # the first 300 held-out requests on an 80 GB GPU's KV budget: the batch never fills,
    # nothing waits, all seven policies replay alike (the old default that printed `nan%`)
    frame, _, _ = heldout(azure_conv, "azure_conv", max_rows=300)
    out = frame["output_tokens"].to_numpy().astype(float)
    big = ServingConfig(kv_tokens=120_000)
    res = whatif(frame, out, out, load=0.9, config=big)
    assert res["mean_jct_s"].n_unique() <= 2  # kv_worst alone may differ
    assert sjf_gain(res) is None
    assert "no request waits" in no_gain_reason(res)
    with pytest.raises(InvalidInputError, match="gains nothing.*load 0.8.*seed 0"):
        whatif_share(frame, out, out, loads=(0.8,), seeds=1, config=big)
    with pytest.raises(InvalidInputError, match="unknown policy"):
        whatif_share(frame, out, out, policies=("lifo",))
    with pytest.raises(InvalidInputError, match="seeds >= 1"):
        whatif_share(frame, out, out, seeds=0)


@pytest.mark.slow
def test_whatif_cli_never_prints_nan(data, tmp_path):
    from typer.testing import CliRunner

    from servecast.cli import app

    db, runner = str(tmp_path / "s.duckdb"), CliRunner()
    ingest = runner.invoke(app, ["ingest", "azure-llm", "--db", db, "--trace", "azure_conv",
                                 str(data / "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")])
    assert ingest.exit_code == 0, ingest.output
    small = runner.invoke(app, ["whatif", "azure_conv", "--db", db, "--max-rows", "300",
                                "--kv-tokens", "120000"])
    assert small.exit_code == 0, small.output
    assert "nan" not in small.output and "gains nothing" in small.output
    default = runner.invoke(app, ["whatif", "azure_conv", "--db", db, "--max-rows", "500"])
    assert default.exit_code == 0, default.output
    assert "SJF by predicted p50 achieves" in default.output and "nan" not in default.output
