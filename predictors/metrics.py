"""The one metrics module every predictor kind and benchmark scores with.

Errors keep the unit of their inputs (`mae`, `rmse`, `bias`: the target's unit; the
percentage errors: %). `pred` comes first, then `true`, in every function. Light: numpy only
(scipy on first use of the rank correlations), so runtimes and benchmarks import it cheaply.
"""

from __future__ import annotations

import numpy as np


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true differ in shape: {pred.shape} vs {true.shape}")
    return pred, true


def ape(pred, true) -> np.ndarray:
    """Absolute percentage errors |pred - true| / true (%), one per row."""
    pred, true = _pair(pred, true)
    return np.abs(pred - true) / true * 100.0


def mdape(pred, true) -> float:
    """Median absolute percentage error (%)."""
    return float(np.median(ape(pred, true)))


def p90_ape(pred, true) -> float:
    """90th percentile of the absolute percentage errors (%)."""
    return float(np.percentile(ape(pred, true), 90))


def mape(pred, true) -> float:
    """Mean absolute percentage error (%)."""
    return float(np.mean(ape(pred, true)))


def ape_scores(pred, true) -> dict[str, float]:
    """MdAPE and p90 APE (%) and the row count `rows`."""
    e = ape(pred, true)
    return {"mdape": float(np.median(e)), "p90": float(np.percentile(e, 90)), "rows": len(e)}


def mae(pred, true) -> float:
    """Mean absolute error (the target's unit)."""
    pred, true = _pair(pred, true)
    return float(np.mean(np.abs(pred - true)))


def error_scores(pred, true) -> dict[str, float]:
    """`n`, MAE, RMSE and bias (mean of pred - true), in the target's unit; NaN when empty."""
    pred, true = _pair(pred, true)
    err = pred - true
    if err.size == 0:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "bias": float("nan")}
    return {"n": int(err.size), "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err ** 2).mean())), "bias": float(err.mean())}


def coverage(upper, true) -> float:
    """Share of rows whose truth is at or below the predicted quantile `upper`."""
    upper, true = _pair(upper, true)
    return float(np.mean(true <= upper))


def pinball(q, true, alpha: float) -> float:
    """Mean pinball (quantile) loss of the prediction `q` at level `alpha` (target's unit)."""
    q, true = _pair(q, true)
    d = true - q
    return float(np.mean(np.maximum(alpha * d, (alpha - 1) * d)))


def kendall_tau(pred, true, max_n: int = 50_000, seed: int = 0) -> float:
    """Kendall tau-b between predictions and truth (a seeded subsample of `max_n` rows above
    that; 0 when either side is constant or there are fewer than two rows)."""
    from scipy.stats import kendalltau

    pred, true = _pair(pred, true)
    if len(true) > max_n:
        idx = np.random.default_rng(seed).choice(len(true), max_n, replace=False)
        pred, true = pred[idx], true[idx]
    if len(true) < 2 or np.all(pred == pred[0]) or np.all(true == true[0]):
        return 0.0
    return float(kendalltau(pred, true).statistic)


def spearman(pred, true) -> float:
    """Spearman rank correlation between predictions and truth."""
    from scipy.stats import spearmanr

    pred, true = _pair(pred, true)
    return float(spearmanr(pred, true).statistic)
