"""Maximum-likelihood fits of positive samples (inter-arrival times in s, lengths in tokens).

Families: exponential, gamma, Weibull, lognormal, all with location 0. Each fit reports its
parameters, log-likelihood, AIC and the Kolmogorov-Smirnov statistic against the sample; the
best family is chosen both by KS and by AIC and both choices are reported.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import optimize, special, stats

FAMILIES = ("exponential", "gamma", "weibull", "lognormal")


def _gamma_shape(x: np.ndarray) -> float:
    """MLE of the gamma shape k: log k - digamma(k) = log(mean) - mean(log x)."""
    s = np.log(x.mean()) - np.log(x).mean()
    if s <= 0:
        return 1e6  # all values equal: a point mass, infinite shape
    f = lambda k: np.log(k) - special.digamma(k) - s  # noqa: E731
    return optimize.brentq(f, 1e-8, 1e8, xtol=1e-12, rtol=1e-12)


def _weibull_shape(x: np.ndarray) -> float:
    """MLE of the Weibull shape c: 1/c + mean(log x) - sum(x^c log x) / sum(x^c) = 0."""
    lx = np.log(x)
    lx0 = lx - lx.max()  # x^c = exp(c log x), scaled to avoid overflow; ratios are unchanged

    def f(c: float) -> float:
        w = np.exp(c * lx0)
        return 1.0 / c + lx.mean() - (w * lx).sum() / w.sum()

    lo, hi = 1e-3, 1.0
    while f(hi) > 0 and hi < 1e4:
        hi *= 2
    return optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-12)


def fit(x: np.ndarray, family: str) -> dict:
    """MLE fit of one `family` to positive `x`: params (scipy conventions), loglik, aic, ks."""
    x = np.asarray(x, dtype=float)
    if family == "exponential":
        dist, params = stats.expon, {"scale": x.mean()}
        frozen = dist(scale=params["scale"])
    elif family == "gamma":
        k = _gamma_shape(x)
        params = {"shape": k, "scale": x.mean() / k}
        frozen = stats.gamma(k, scale=params["scale"])
    elif family == "weibull":
        c = _weibull_shape(x)
        lx = np.log(x)  # scale = mean(x^c)^(1/c), in log space so that x^c cannot overflow
        m = lx.max()
        params = {"shape": c, "scale": float(np.exp(np.log(np.mean(np.exp(c * (lx - m)))) / c + m))}
        frozen = stats.weibull_min(c, scale=params["scale"])
    elif family == "lognormal":
        lx = np.log(x)
        params = {"shape": lx.std(), "scale": np.exp(lx.mean())}  # sigma, exp(mu)
        frozen = stats.lognorm(params["shape"], scale=params["scale"])
    else:
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    loglik = float(frozen.logpdf(x).sum())
    k_params = len(params)
    ks = float(stats.kstest(x, frozen.cdf).statistic)
    return {"family": family, **{k: float(v) for k, v in params.items()},
            "mean": float(frozen.mean()), "cv": float(frozen.std() / frozen.mean()),
            "loglik": loglik, "aic": 2 * k_params - 2 * loglik, "ks": ks}


def fit_all(x: np.ndarray, families: tuple[str, ...] = FAMILIES) -> pl.DataFrame:
    """Fit every family to the positive values of `x`.

    Returns one row per family: family, shape, scale, mean, cv, loglik, aic, ks, n, and
    boolean columns best_ks / best_aic marking the winner of each criterion.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < 3:
        return pl.DataFrame(schema={"family": pl.Utf8, "shape": pl.Float64, "scale": pl.Float64,
                                    "mean": pl.Float64, "cv": pl.Float64, "loglik": pl.Float64,
                                    "aic": pl.Float64, "ks": pl.Float64, "n": pl.Int64,
                                    "best_ks": pl.Boolean, "best_aic": pl.Boolean})
    rows = [fit(x, f) for f in families]
    df = pl.DataFrame(rows).with_columns(pl.lit(x.size, dtype=pl.Int64).alias("n"))
    if "shape" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("shape"))
    df = df.select("family", "shape", "scale", "mean", "cv", "loglik", "aic", "ks", "n")
    return df.with_columns(
        (pl.col("ks") == pl.col("ks").min()).alias("best_ks"),
        (pl.col("aic") == pl.col("aic").min()).alias("best_aic"),
    )


def best(fits: pl.DataFrame, by: str = "ks") -> str | None:
    """Family with the smallest `by` (ks or aic)."""
    if fits.is_empty():
        return None
    return fits.sort(by).item(0, "family")
