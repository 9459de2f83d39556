"""LLM-trace characterization against independent numpy/scipy computations on the raw files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from servecast.analytics import arrivals, failures, fits, lengths, sessions

AZURE = "llm/azure_llm_2023/AzureLLMInferenceTrace_{}.csv"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def store(store_of):
    return store_of(("azure-llm", AZURE.format("code"), "azure_code"),
                    ("azure-llm", AZURE.format("conv"), "azure_conv"),
                    ("burstgpt", "llm/burstgpt", "burstgpt_head54"),
                    ("burstgpt", FIXTURES / "burstgpt_v3_sessions.csv", "sessions"))


def raw_azure(data: Path, kind: str) -> pd.DataFrame:
    df = pd.read_csv(data / AZURE.format(kind))
    t = pd.to_datetime(df["TIMESTAMP"]).astype("int64").to_numpy() / 1e9
    return df.assign(t=t - t.min()).sort_values("t", kind="stable")


@pytest.mark.parametrize("kind", ["code", "conv"])
def test_medians_and_interarrival_cv_match_numpy(store, data, kind):
    raw = raw_azure(data, kind)
    q = lengths.length_quantiles(store, f"azure_{kind}")
    med = dict(zip(q["field"], q["p50"], strict=True))
    assert med["prompt_tokens"] == np.median(raw["ContextTokens"])
    assert med["output_tokens"] == np.median(raw["GeneratedTokens"])
    gaps = np.diff(raw["t"].to_numpy())
    b = arrivals.burstiness(store, f"azure_{kind}").row(0, named=True)
    assert b["cv"] == pytest.approx(gaps.std() / gaps.mean(), rel=1e-3)
    sigma, mu = gaps.std(), gaps.mean()
    assert b["burstiness_b"] == pytest.approx((sigma - mu) / (sigma + mu), rel=1e-3)
    # index of dispersion of 10 s counts, empty bins included
    counts = np.bincount(np.floor(raw["t"].to_numpy() / 10).astype(int))
    assert b["idc_10s"] == pytest.approx(counts.var() / counts.mean(), rel=1e-6)
    assert b["peak_to_mean_10s"] == pytest.approx(counts.max() / counts.mean(), rel=1e-6)


def test_code_interarrival_fits_match_scipy_and_weibull_beats_gamma(store, data):
    gaps = np.diff(raw_azure(data, "code")["t"].to_numpy())
    gaps = gaps[gaps > 0]
    ours = arrivals.interarrival_fits(store, "azure_code")
    row = {r["family"]: r for r in ours.iter_rows(named=True)}
    ks = {}
    for fam, dist in [("gamma", stats.gamma), ("weibull", stats.weibull_min),
                      ("lognormal", stats.lognorm), ("exponential", stats.expon)]:
        params = dist.fit(gaps, floc=0)
        ks[fam] = stats.kstest(gaps, dist.name, params).statistic
        assert row[fam]["scale"] == pytest.approx(params[-1], rel=2e-3)
        assert row[fam]["ks"] == pytest.approx(ks[fam], abs=2e-3)
        ll = dist.logpdf(gaps, *params).sum()
        assert row[fam]["loglik"] == pytest.approx(ll, rel=1e-3)
    assert ks["weibull"] < ks["gamma"]
    assert row["weibull"]["ks"] < row["gamma"]["ks"]
    assert fits.best(ours, "ks") == min(ks, key=ks.get)
    assert ours.filter("best_aic")["family"].item() == ours.sort("aic")["family"][0]


def _kde_peaks(values: np.ndarray) -> list[float]:
    x = np.log(values[values > 0])
    grid = np.linspace(x.min(), x.max(), 2000)
    d = stats.gaussian_kde(x)(grid)
    idx = [i for i in range(1, len(d) - 1) if d[i] > d[i - 1] and d[i] >= d[i + 1]]
    top = sorted(idx, key=lambda i: d[i])[-2:]
    return sorted(float(np.exp(grid[i])) for i in top)


@pytest.mark.slow  # mixture fits and a KDE on the full Azure trace
def test_conversation_output_is_bimodal_with_independent_modes(store, data):
    out = raw_azure(data, "conv")["GeneratedTokens"].to_numpy()
    res = lengths.bimodality(store, "azure_conv", field="output_tokens")
    assert res["bimodal"]
    from sklearn.mixture import GaussianMixture

    x = np.log(out[out > 0]).reshape(-1, 1)
    bic1 = GaussianMixture(1, random_state=0).fit(x).bic(x)
    bic2 = GaussianMixture(2, random_state=0, n_init=2).fit(x).bic(x)
    assert bic2 < bic1 - 10
    for ours, ref in zip(res["modes_tokens"], _kde_peaks(out), strict=True):
        assert ours == pytest.approx(ref, rel=0.15)
    # the code service's output is unimodal: the test is not a rubber stamp
    assert not lengths.bimodality(store, "azure_code", field="output_tokens")["bimodal"]


def test_lengths_tail_conditional_and_correlations_match_numpy(store, data):
    raw = raw_azure(data, "conv")
    p, o = raw["ContextTokens"].to_numpy(), raw["GeneratedTokens"].to_numpy()
    corr = lengths.correlations(store, "azure_conv")
    ok = o > 0
    assert corr["spearman"] == pytest.approx(stats.spearmanr(p[ok], o[ok]).statistic, abs=1e-9)
    assert corr["pearson"] == pytest.approx(np.corrcoef(p[ok], o[ok])[0, 1], abs=1e-9)
    cond = lengths.conditional_output(store, "azure_conv")
    for r in cond.iter_rows(named=True):
        sel = o[ok & (p >= r["prompt_lo"]) & (p < r["prompt_hi"])]
        assert r["n"] == sel.size
        assert r["out_p50"] == pytest.approx(np.quantile(sel, 0.5))
        assert r["out_p90"] == pytest.approx(np.quantile(sel, 0.9))
    tail = lengths.zipf_tail(store, "azure_conv", field="prompt_tokens")
    top = np.sort(p[p > 0])[::-1][: tail["tail_k"] + 1]
    hill = 1 / np.mean(np.log(top[:-1] / top[-1]))
    assert tail["hill_tail_index"] == pytest.approx(hill, rel=1e-9)
    vals, cnt = np.unique(p[p > 0], return_counts=True)
    freq = np.sort(cnt)[::-1]
    slope = np.polyfit(np.log(np.arange(1, freq.size + 1)), np.log(freq), 1)[0]
    assert tail["zipf_exponent"] == pytest.approx(-slope, rel=1e-6)
    hist = lengths.length_histogram(store, "azure_conv", field="output_tokens")
    assert hist["count"].sum() == o.size


def test_segments_and_failures_on_burstgpt(store, data):
    raw = pd.read_csv(data / "llm/burstgpt/BurstGPT_head54.csv")
    seg = arrivals.burstiness(store, "burstgpt_head54", by_segment=True)
    expect = raw.groupby(["Model", "Log Type"]).size()
    got = {(r["model"], r["log_type"]): r["requests"] for r in seg.iter_rows(named=True)}
    assert got == expect.to_dict()
    f = failures.failure_summary(store, "burstgpt_head54")
    assert f["failed"] == int((raw["Response tokens"] == 0).sum())
    series = failures.failure_series(store, "burstgpt_head54", bin_s=600)
    assert series["failed"].sum() == f["failed"] and series["requests"].sum() == len(raw)
    load = failures.failure_vs_load(store, "burstgpt_head54", bin_s=60, groups=3)
    assert load["requests"].sum() == len(raw)


def test_sessions_known_answer(store):
    summ = sessions.session_summary(store, "sessions")
    assert (summ["sessions"], summ["turns_max"], summ["multi_turn_share"]) == (3, 3, 2 / 3)
    assert summ["gap_p50_s"] == 20.0  # gaps 10, 20 (s1) and 65 (s2)
    growth = sessions.prompt_growth(store, "sessions")
    # turn 2 context: s1 100+50+30 = 180, s2 200+0+60 = 260
    assert growth.filter(turn=2)["context_mean"].item() == 220.0
    assert growth.filter(turn=3)["context_mean"].item() == 240.0


def test_rate_series_and_weekly_profile_on_a_relation():
    con = duckdb.connect()
    rel = con.sql("""SELECT i AS request_id, i * 3600.0 + 5 AS arrival_s, 10 AS prompt_tokens,
                            5 AS output_tokens, NULL::VARCHAR AS model,
                            NULL::VARCHAR AS log_type, false AS failed
                     FROM range(24 * 3) r(i)""")  # one request per hour for three days
    prof = arrivals.weekly_profile(rel)
    assert prof.height == 3 * 24 and (prof["requests"] == 1).all()
    assert prof["rate_per_s"].to_list() == pytest.approx([1 / 3600] * 72)
    rs = arrivals.rate_series(rel, bin_s=1800)
    assert rs.height == 143 and rs["requests"].sum() == 72
