"""The analytics parameters the other analytics tests leave at their defaults, each passed
on the shared Azure / Mooncake / BurstGPT traces and checked for the effect it documents
(tests/test_analytics_coverage.py lists what no test calls)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from servecast import simulator as whatif
from servecast.analytics import (
    arrivals,
    characterize,
    failures,
    fits,
    lengths,
    prefix_cache,
    sessions,
    source,
    synth,
)
from servecast.errors import InvalidInputError, UnknownNameError

AZURE = "llm/azure_llm_2023/AzureLLMInferenceTrace_{}.csv"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def store(store_of):
    return store_of(("azure-llm", AZURE.format("code"), "azure_code"),
                    ("mooncake", "llm/mooncake", "mooncake"),
                    ("burstgpt", "llm/burstgpt", "burstgpt_head54"),
                    ("burstgpt", FIXTURES / "burstgpt_v3_sessions.csv", "sessions"),
                    ("olmoe-routing", "moe/olmoe_routing", "olmoe"))


def arrivals_of(store, trace: str) -> np.ndarray:
    return store.sql("SELECT arrival_s FROM llm_requests WHERE trace = ? ORDER BY arrival_s",
                     [trace])["arrival_s"].to_numpy()


def test_rate_series_max_bins_and_weekly_profile(store):
    full = arrivals.rate_series(store, trace="azure_code", bin_s=1.0)
    capped = arrivals.rate_series(store, "azure_code", bin_s=1.0, max_bins=100)
    assert full.height > 100 and (full["requests"] == 0).any()  # empty bins included
    assert capped.height == (full["requests"] > 0).sum()  # only non-empty bins beyond the cap
    assert capped["requests"].sum() == full["requests"].sum() == 8819
    assert arrivals.weekly_profile(store, trace="azure_code").is_empty()  # 1 h < 2 days


def test_interarrival_sample_n_seed_and_fits_n(store):
    gaps = np.diff(arrivals_of(store, "azure_code"))
    whole = arrivals.interarrival_sample(src=store, trace="azure_code")
    np.testing.assert_allclose(np.sort(whole), np.sort(gaps))
    a = arrivals.interarrival_sample(store, "azure_code", n=500, seed=1)
    b = arrivals.interarrival_sample(store, "azure_code", n=500, seed=1)
    c = arrivals.interarrival_sample(store, "azure_code", n=500, seed=2)
    assert len(a) == 500 and np.array_equal(a, b) and not np.array_equal(a, c)
    small = arrivals.interarrival_fits(store, "azure_code", n=1000)
    assert set(small["n"]) == {int((a_ := arrivals.interarrival_sample(
        store, "azure_code", n=1000))[a_ > 0].size)}


def test_fit_family_fit_all_families_and_best_by(store):
    gaps = np.diff(arrivals_of(store, "azure_code"))
    gaps = gaps[gaps > 0]
    one = fits.fit(x=gaps, family="exponential")
    assert one["family"] == "exponential"
    assert one["scale"] == pytest.approx(gaps.mean(), rel=1e-9)  # the MLE is the mean
    two = fits.fit_all(x=gaps, families=("exponential", "lognormal"))
    assert two["family"].to_list() == ["exponential", "lognormal"]
    assert fits.best(fits=two, by="aic") == two.filter(pl.col("best_aic"))["family"][0]
    assert fits.best(two, by="ks") == two.filter(pl.col("best_ks"))["family"][0]


def test_length_parameters(store):
    raw = store.sql("SELECT prompt_tokens, output_tokens FROM llm_requests "
                    "WHERE trace = 'azure_code'")
    coarse = lengths.length_histogram(store, "azure_code", field="output_tokens",
                                      bins_per_decade=2)
    fine = lengths.length_histogram(store, "azure_code", field="output_tokens",
                                    bins_per_decade=20)
    assert coarse["count"].sum() == fine["count"].sum() == raw.height
    assert coarse.height < fine.height
    top1 = lengths.zipf_tail(store, "azure_code", tail_share=0.01)
    top10 = lengths.zipf_tail(store, "azure_code", tail_share=0.10)
    assert top1["hill_tail_index"] != top10["hill_tail_index"]
    s = lengths.length_sample(src=store, trace="azure_code", field="output_tokens", n=300,
                              seed=3)
    assert len(s) == 300 and set(s) <= set(raw["output_tokens"].to_list())
    cond5 = lengths.conditional_output(store, "azure_code", min_count=5)
    cond500 = lengths.conditional_output(store, "azure_code", min_count=500)
    assert cond500["n"].min() >= 500 and cond5.height > cond500.height


def test_gaussian_mixture_and_bimodality_parameters(store):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 3000), rng.normal(8, 1, 1000)])
    w, mu, var, ll = lengths.gaussian_mixture_1d(x=x, k=2, iters=200, tol=1e-8)
    assert mu == pytest.approx([0, 8], abs=0.1) and w == pytest.approx([0.75, 0.25], abs=0.02)
    *_, ll_short = lengths.gaussian_mixture_1d(x, 2, iters=1, tol=1e-8)
    assert ll_short <= ll + 1e-9
    b = lengths.bimodality(store, "azure_code", field="output_tokens", n=2000,
                           min_delta_bic=10.0, min_weight=0.05, seed=1)
    strict = lengths.bimodality(store, "azure_code", field="output_tokens", n=2000,
                                min_delta_bic=1e12, min_weight=0.05, seed=1)
    heavy = lengths.bimodality(store, "azure_code", field="output_tokens", n=2000,
                               min_delta_bic=10.0, min_weight=0.99, seed=1)
    assert strict["bimodal"] is False and heavy["bimodal"] is False
    assert b["delta_bic"] == strict["delta_bic"]  # thresholds change the verdict only


def test_failure_load_correlation_and_sessions(store):
    assert failures.failure_load_correlation(src=store, trace="azure_code", bin_s=60.0) is None
    r = failures.failure_load_correlation(store, "burstgpt_head54", bin_s=1.0)
    assert r is None or -1.0 <= r <= 1.0
    assert sessions.has_sessions(src=store, trace="sessions")
    assert not sessions.has_sessions(store, "azure_code")
    turns = sessions.turns_distribution(src=store, trace="sessions")
    per = store.sql("SELECT session_id, count(*) AS n FROM llm_requests "
                    "WHERE trace = 'sessions' AND session_id IS NOT NULL GROUP BY 1")
    assert turns["sessions"].sum() == per.height
    assert dict(zip(turns["turns"].to_list(), turns["sessions"].to_list(), strict=True)) == \
        dict(per.group_by("n").len().iter_rows())
    two = sessions.prompt_growth(store, "sessions", max_turn=2)
    assert two["turn"].max() <= 2


def test_block_accesses_match_the_prefix_hashes(store):
    blocks, req = prefix_cache.block_accesses(src=store, trace="mooncake")
    raw = store.sql("SELECT prefix_hashes FROM llm_requests WHERE trace = 'mooncake' "
                    "ORDER BY arrival_s, request_id")["prefix_hashes"]
    assert len(blocks) == len(req) == sum(0 if h is None else len(h) for h in raw)
    assert np.all(np.diff(req) >= 0)


def test_source_quote_and_table_check(store):
    assert source.quote(s="it's") == "'it''s'"
    assert store.sql(f"SELECT {source.quote(chr(39) + '; DROP')} AS v")["v"][0] == "'; DROP"
    s = source.source(src=store, trace="azure_code", table="llm_requests")
    assert s.scalar("SELECT count(*) FROM t") == 8819
    with pytest.raises(UnknownNameError, match="azure_code"):
        source.source(store, "azure_code", table="cluster_jobs")


@pytest.mark.slow  # two full LLM characterizations: ~7 s
def test_characterize_kinds_clean_and_sample(store):
    assert characterize.trace_kind(store=store, trace="azure_code") == "llm"
    with pytest.raises(UnknownNameError):
        characterize.trace_kind(store, "olmoe")  # MoE loads: not a characterized kind
    assert characterize.clean(obj={"a": float("nan"), "b": np.int64(3),
                                   "f": pl.DataFrame({"x": [1.0, math.inf]})}) == \
        {"a": None, "b": 3, "f": [{"x": 1.0}, {"x": None}]}
    small = characterize.characterize_llm(store, "azure_code", sample=500)
    json.dumps(small)  # JSON-ready
    full = characterize.characterize(store=store, trace="azure_code")
    assert full["kind"] == "llm" and json.dumps(full)


def test_synth_parameters(store):
    for dist in ("exponential", "gamma", "weibull"):
        d = synth.gap_distribution(mean=2.0, cv=1.5 if dist != "exponential" else 1.0,
                                   dist=dist)
        assert d.mean() == pytest.approx(2.0, rel=1e-6)
    m10 = synth.fit_workload(store, "azure_code", window_s=600.0, length_bins=10)
    m40 = synth.fit_workload(store, "azure_code", length_bins=40)
    assert len(m10.output_quantiles) == 10 and len(m40.output_quantiles) == 40  # prompt bins
    rng = np.random.default_rng(0)
    t = synth.sample_arrivals(windows=m10.windows, duration_s=600.0, rate_scale=2.0, rng=rng)
    t1 = synth.sample_arrivals(m10.windows, 600.0, rng=np.random.default_rng(0))
    assert t.max() < 600.0 and len(t) == pytest.approx(2 * len(t1), rel=0.15)
    p, o = synth.sample_lengths(model=m10, n=1000, rng=np.random.default_rng(1))
    assert len(p) == len(o) == 1000 and p.min() >= 0 and o.min() >= 0
    with pytest.raises(InvalidInputError, match="unknown arrival family 'lognormal'"):
        synth.gap_distribution(2.0, 1.5, "lognormal")


@pytest.mark.slow  # trains two fast output-length models: ~15 s on a loaded 2-core machine
def test_whatif_helpers_and_trace_parameters(store, tmp_path):
    from servecast.predictors.output_length.train import train_output_length

    cfg = whatif.ServingConfig(max_batch=8)
    frame = store.sql("SELECT arrival_s, prompt_tokens, output_tokens FROM llm_requests "
                      "WHERE trace = 'azure_code' ORDER BY arrival_s LIMIT 400")
    p, o = frame["prompt_tokens"].to_numpy(), frame["output_tokens"].to_numpy()
    assert whatif.capacity(prompt=p, output=o, config=cfg) < whatif.capacity(p, o)
    scaled = whatif.scale_arrivals(arrival_s=frame["arrival_s"].to_numpy(), rate=2.0)
    assert (len(scaled) - 1) / (scaled[-1] - scaled[0]) == pytest.approx(2.0, rel=1e-9)
    res = whatif.whatif(frame, o.astype(float), o * 1.2, load=0.8,
                        policies=("fcfs", "sjf_pred", "sjf_oracle"), config=cfg)
    assert whatif.sjf_gain(result=res, policy="sjf_oracle") == pytest.approx(1.0)
    assert whatif.sjf_gain(res) == pytest.approx(1.0)  # p50 = the true output: the oracle
    assert whatif.config_dict(config=cfg)["max_batch"] == 8
    models = tmp_path / "models"
    train_output_length(store, "azure_code", models / "output_length", fast=True)
    with_models = whatif.whatif_trace(store=store, trace="azure_code", models=models,
                                      load=0.7, config=cfg, max_rows=600, fast=True)
    trained = whatif.whatif_trace(store, "azure_code", load=0.7, config=cfg, max_rows=600,
                                  fast=True)
    assert with_models["policy"].to_list() == trained["policy"].to_list() == list(whatif.POLICIES)
    assert set(with_models["load"]) == {0.7}


def test_moe_domain_distances_match_the_shares(store):
    from servecast.analytics import moe

    d = moe.domain_distances(source=store, trace="olmoe")
    assert d.height > 0 and (d["domain_a"] < d["domain_b"]).all()
    assert d["l1"].min() >= 0 and d["l1"].max() <= 2 + 1e-9
    row = d.row(0, named=True)
    sh = moe.shares(store, "olmoe").filter(
        (pl.col("model") == row["model"]) & (pl.col("layer") == row["layer"])
        & (pl.col("assignment") == row["assignment"]))
    a = sh.filter(pl.col("domain") == row["domain_a"]).sort("expert")["share"].to_numpy()
    b = sh.filter(pl.col("domain") == row["domain_b"]).sort("expert")["share"].to_numpy()
    assert row["l1"] == pytest.approx(np.abs(a - b).sum())
