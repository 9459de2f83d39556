"""predictors/metrics.py, the one metrics module every kind scores with: known answers, bad
input, and agreement with scipy on real latencies."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import kendalltau, spearmanr

from servecast.predictors import metrics


@pytest.fixture(scope="module")
def latencies(data):
    """(a crude prediction, the truth): HELP's 1080 Ti latency (ms) at batch 1 scaled by the
    median ratio, against the measured latency at batch 256."""
    folder = data / "gpu" / "help_nasbench201" / "latency"
    b1, b256 = (pl.read_csv(folder / f"1080ti_{b}.csv").sort("arch_index")["latency_ms"]
                .to_numpy() for b in (1, 256))
    return b1 * np.median(b256 / b1), b256


def test_known_answers():
    pred, true = np.array([110.0, 90.0, 100.0, 150.0]), np.array([100.0, 100.0, 100.0, 100.0])
    assert metrics.ape(pred, true).tolist() == [10.0, 10.0, 0.0, 50.0]
    assert metrics.mdape(pred, true) == 10.0
    assert metrics.mape(pred, true) == 17.5
    assert metrics.p90_ape(pred, true) == pytest.approx(38.0)
    assert metrics.ape_scores(pred, true) == {"mdape": 10.0, "p90": pytest.approx(38.0),
                                              "rows": 4}
    assert metrics.mae(pred, true) == 17.5
    s = metrics.error_scores(pred, true)
    assert s == {"n": 4, "mae": 17.5, "rmse": pytest.approx(math.sqrt(2700 / 4)),
                 "bias": 12.5}
    assert metrics.coverage(pred, true) == 0.75
    # pinball at 0.9: under-predictions cost 0.9 per unit, over-predictions 0.1
    assert metrics.pinball(pred, true, alpha=0.9) == pytest.approx((1 + 9 + 0 + 5) / 4)
    assert metrics.kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert metrics.kendall_tau([3, 2, 1], [1, 2, 3]) == -1.0
    assert metrics.kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0  # constant: no ranking
    assert metrics.spearman([1, 5, 9], [2, 3, 10]) == 1.0


def test_empty_and_mismatched_input():
    s = metrics.error_scores([], [])
    assert s["n"] == 0 and all(math.isnan(s[k]) for k in ("mae", "rmse", "bias"))
    with pytest.raises(ValueError, match=r"differ in shape: \(3,\) vs \(2,\)"):
        metrics.mdape([1, 2, 3], [1, 2])


def test_agrees_with_scipy_on_real_latencies(latencies):
    pred, true = latencies
    assert metrics.spearman(pred, true) == pytest.approx(spearmanr(pred, true).statistic)
    assert metrics.kendall_tau(pred, true) == pytest.approx(kendalltau(pred, true).statistic)
    # above max_n rows: a seeded subsample, the same every call, close to the full value
    sub = metrics.kendall_tau(pred, true, max_n=5_000)
    assert sub == metrics.kendall_tau(pred, true, max_n=5_000)
    assert sub == pytest.approx(kendalltau(pred, true).statistic, abs=0.02)
