"""Prompt / output length characterization (tokens).

Quantiles, log-binned histograms, the Zipf exponent of the rank-frequency curve, a Hill tail
index, a 1- vs 2-component Gaussian-mixture bimodality test on log length (BIC), output
quantiles conditional on the prompt length (BurstGPT's request->response figure) and
correlations. Aggregation runs in DuckDB; only the bimodality test pulls a bounded sample.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import gaussian_kde

from servecast.analytics.source import source

FIELDS = ("prompt_tokens", "output_tokens")
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def _field(field: str) -> str:
    if field not in FIELDS:
        raise ValueError(f"unknown length field {field!r}; use one of {', '.join(FIELDS)}")
    return field


def length_quantiles(src, trace: str | None = None) -> pl.DataFrame:
    """One row per field (prompt_tokens, output_tokens): n, mean, std, min, p1..p99 (linear
    interpolation, as numpy), max. Failed requests (output 0) are included."""
    s = source(src, trace, "llm_requests")
    parts = []
    for f in FIELDS:
        qs = ", ".join(f"quantile_cont({f}, {q}) AS p{round(q * 100)}" for q in QUANTILES)
        parts.append(f"SELECT '{f}' AS field, count({f}) AS n, avg({f}) AS mean, "
                     f"stddev_pop({f}) AS std, min({f})::DOUBLE AS min, {qs}, "
                     f"max({f})::DOUBLE AS max FROM t")
    return s.sql(" UNION ALL ".join(parts) + " ORDER BY field")


def length_histogram(src, trace: str | None = None, field: str = "prompt_tokens",
                     bins_per_decade: int = 10, by: str | None = None) -> pl.DataFrame:
    """Log-binned histogram of `field`: lo, hi (tokens, [lo, hi)), count, share. Zero
    lengths get their own bin [0, 1). With `by` ("model" or "log_type") one histogram per
    value of that column (first column `segment`, NULL as "(none)"), shares within it."""
    f = _field(field)
    seg = _segment(by)
    s = source(src, trace, "llm_requests")
    b = bins_per_decade
    sel, key = (f"coalesce({seg}, '(none)') AS segment, ", "segment, ") if seg else ("", "")
    part = "PARTITION BY segment" if seg else ""
    return s.sql(f"""
        SELECT {key}CASE WHEN k < 0 THEN 0 ELSE 10 ^ (k / {b}) END AS lo,
               CASE WHEN k < 0 THEN 1 ELSE 10 ^ ((k + 1) / {b}) END AS hi,
               count(*) AS count, count(*) / sum(count(*)) OVER ({part}) AS share
        FROM (SELECT {sel}CASE WHEN {f} <= 0 THEN -1 ELSE floor(log10({f}) * {b}) END AS k
              FROM t)
        GROUP BY {key}k ORDER BY {key}k""")


def _segment(by: str | None) -> str | None:
    if by not in (None, "model", "log_type"):
        raise ValueError(f"unknown segment column {by!r}; use model or log_type")
    return by


def length_quantiles_by(src, trace: str | None = None, by: str = "model") -> pl.DataFrame:
    """Per-model (or per-log-type, `by="log_type"`) length distribution, the BurstGPT
    paper's per-model view: one row per (segment, field) with requests, mean, p10, p50,
    p90, p99 and max (tokens), segments by descending request count."""
    seg = _segment(by)
    s = source(src, trace, "llm_requests")
    parts = []
    for f in FIELDS:
        qs = ", ".join(f"quantile_cont({f}, {q}) AS p{round(q * 100)}"
                       for q in (0.1, 0.5, 0.9, 0.99))
        parts.append(f"SELECT coalesce({seg}, '(none)') AS segment, '{f}' AS field, "
                     f"count(*) AS requests, avg({f}) AS mean, {qs}, max({f})::DOUBLE AS max "
                     "FROM t GROUP BY ALL")
    return s.sql(" UNION ALL ".join(parts)).sort(
        [pl.col("requests").sum().over("segment"), "segment", "field"],
        descending=[True, False, False])


def rank_frequency(src, trace: str | None = None, field: str = "prompt_tokens",
                   max_rank: int = 10_000) -> pl.DataFrame:
    """Zipf rank-frequency view of `field`: the distinct positive lengths by descending
    frequency (ties by length), columns rank (1 = most frequent), tokens, count, share;
    the first `max_rank` ranks. `zipf_tail` fits the slope of log count on log rank."""
    f = _field(field)
    s = source(src, trace, "llm_requests")
    return s.sql(f"""
        SELECT row_number() OVER (ORDER BY c DESC, v) AS rank, v AS tokens, c AS count,
               c / sum(c) OVER () AS share
        FROM (SELECT {f} AS v, count(*) AS c FROM t WHERE {f} > 0 GROUP BY v)
        ORDER BY rank LIMIT {int(max_rank)}""")


def zipf_tail(src, trace: str | None = None, field: str = "prompt_tokens",
              tail_share: float = 0.01) -> dict:
    """Heavy-tail statistics of `field`.

    zipf_exponent: s in freq ~ rank^-s, least squares on log frequency vs log rank over the
    distinct positive lengths; hill_tail_index: alpha of P(X > x) ~ x^-alpha from the Hill
    estimator on the top `tail_share` of positive values (at least 10).
    """
    f = _field(field)
    s = source(src, trace, "llm_requests")
    zipf = s.scalar(f"""
        SELECT -regr_slope(ln(c), ln(r)) FROM (
            SELECT c, row_number() OVER (ORDER BY c DESC, v) AS r
            FROM (SELECT {f} AS v, count(*) AS c FROM t WHERE {f} > 0 GROUP BY v))""")
    n = s.scalar(f"SELECT count(*) FROM t WHERE {f} > 0") or 0
    k = max(10, int(n * tail_share))
    hill = None
    if n > k + 1:
        hill = s.scalar(f"""
            WITH top AS (SELECT {f}::DOUBLE AS v FROM t WHERE {f} > 0 ORDER BY v DESC
                         LIMIT {k + 1}),
            ref AS (SELECT min(v) AS x0 FROM top)
            SELECT 1 / avg(ln(v / x0)) FROM (SELECT v FROM top ORDER BY v DESC LIMIT {k}), ref""")
    return {"field": f, "zipf_exponent": zipf, "hill_tail_index": hill, "tail_k": k}


def length_sample(src, trace: str | None = None, field: str = "prompt_tokens",
                  n: int = 50_000, seed: int = 0) -> np.ndarray:
    """Values of `field` (tokens); a seeded uniform sample of `n` when the trace is larger."""
    f = _field(field)
    s = source(src, trace, "llm_requests")
    total = s.scalar("SELECT count(*) FROM t") or 0
    q = f"SELECT {f} AS v FROM t"
    if total > n:
        q += f" USING SAMPLE reservoir({n} ROWS) REPEATABLE ({seed})"
    return s.sql(q)["v"].to_numpy()


def _normal_logpdf(x: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def gaussian_mixture_1d(x: np.ndarray, k: int, iters: int = 300,
                        tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """EM fit of a `k`-component 1-D Gaussian mixture, best of several quantile-based starts.

    Returns (weights, means, variances, log-likelihood), components by ascending mean.
    """
    x = np.asarray(x, dtype=float).reshape(-1, 1)
    floor = max(x.var() * 1e-6, 1e-9)
    if k == 1:
        mu, var = np.array([x.mean()]), np.array([max(x.var(), floor)])
        return np.ones(1), mu, var, float(_normal_logpdf(x, mu, var).sum())
    best = None
    starts = [np.quantile(x, np.linspace(a, 1 - a, k)) for a in (0.1, 0.25, 0.4)]
    for mu in starts:
        w, var = np.full(k, 1.0 / k), np.full(k, x.var() / k)
        prev = -np.inf
        for _ in range(iters):
            lp = np.log(w) + _normal_logpdf(x, mu, var)  # n x k
            m = lp.max(axis=1, keepdims=True)
            ll_rows = m[:, 0] + np.log(np.exp(lp - m).sum(axis=1))
            resp = np.exp(lp - ll_rows[:, None])
            nk = resp.sum(axis=0) + 1e-12
            w = nk / nk.sum()
            mu = (resp * x).sum(axis=0) / nk
            var = np.maximum((resp * (x - mu) ** 2).sum(axis=0) / nk, floor)
            ll = float(ll_rows.sum())
            if ll - prev < tol * abs(ll):
                break
            prev = ll
        if best is None or ll > best[3]:
            best = (w, mu, var, ll)
    w, mu, var, ll = best
    order = np.argsort(mu)
    return w[order], mu[order], var[order], ll


def _density_peaks(grid: np.ndarray, dens: np.ndarray) -> np.ndarray:
    """Indices of the local maxima of a density on a grid."""
    inner = (dens[1:-1] > dens[:-2]) & (dens[1:-1] >= dens[2:])
    return np.flatnonzero(inner) + 1


def bimodality(src, trace: str | None = None, field: str = "output_tokens",
               n: int = 10_000, min_delta_bic: float = 10.0, min_weight: float = 0.05,
               seed: int = 0) -> dict:
    """1- vs 2-component Gaussian mixture (EM) on log(tokens) of the positive values of `field`.

    bimodal is True when the 2-component model wins by more than `min_delta_bic` BIC, its
    density has two peaks and the smaller component weighs at least `min_weight`.
    modes_tokens: the two highest peaks of a kernel density estimate of log length (tokens,
    ascending) when bimodal; mixture_medians_tokens: exp of the component means.
    """
    x = length_sample(src, trace, field, n, seed)
    x = np.log(x[x > 0].astype(float)).reshape(-1, 1)
    out = {"field": field, "n": int(x.shape[0]), "bimodal": False, "bic_1": None,
           "bic_2": None, "delta_bic": None, "modes_tokens": [], "mixture_medians_tokens": [],
           "mixture_weights": []}
    if x.shape[0] < 50 or np.ptp(x) == 0:
        return out
    *_, ll1 = gaussian_mixture_1d(x, 1)
    w, mu, var, ll2 = gaussian_mixture_1d(x, 2)
    grid = np.linspace(x.min(), x.max(), 1000)
    mix_dens = (w * np.exp(_normal_logpdf(grid[:, None], mu, var))).sum(axis=1)
    mix_peaks = _density_peaks(grid, mix_dens)
    n_obs = x.shape[0]
    out.update(bic_1=float(2 * np.log(n_obs) - 2 * ll1), bic_2=float(5 * np.log(n_obs) - 2 * ll2),
               mixture_medians_tokens=[float(v) for v in np.exp(mu)],
               mixture_weights=[float(v) for v in w])
    out["delta_bic"] = out["bic_1"] - out["bic_2"]
    out["bimodal"] = bool(out["delta_bic"] > min_delta_bic and len(mix_peaks) >= 2
                          and w.min() >= min_weight)
    if out["bimodal"]:
        kde = gaussian_kde(x.ravel()[:5000] if x.shape[0] > 5000 else x.ravel())
        dens = kde(grid)
        peaks = _density_peaks(grid, dens)
        top = peaks[np.argsort(dens[peaks])[-2:]]
        out["modes_tokens"] = sorted(float(np.exp(grid[i])) for i in top)
    return out


def conditional_output(src, trace: str | None = None, min_count: int = 20) -> pl.DataFrame:
    """Output-length quantiles per prompt-length bin (power-of-two bins [2^k, 2^(k+1))).

    Columns: prompt_lo, prompt_hi (tokens), n, out_p10, out_p50, out_p90, out_mean, over
    successful requests (output > 0). Bins with fewer than `min_count` requests are dropped.
    """
    s = source(src, trace, "llm_requests")
    return s.sql(f"""
        SELECT 2 ^ k AS prompt_lo, 2 ^ (k + 1) AS prompt_hi, count(*) AS n,
               quantile_cont(output_tokens, 0.1) AS out_p10,
               quantile_cont(output_tokens, 0.5) AS out_p50,
               quantile_cont(output_tokens, 0.9) AS out_p90, avg(output_tokens) AS out_mean
        FROM (SELECT floor(log2(greatest(prompt_tokens, 1))) AS k, output_tokens FROM t
              WHERE output_tokens > 0)
        GROUP BY k HAVING count(*) >= {min_count} ORDER BY k""")


def correlations(src, trace: str | None = None) -> dict:
    """Prompt/output correlation over successful requests (output > 0): pearson, spearman
    (average ranks for ties, from per-value rank tables rather than a full sort) and
    pearson_log (of log(1 + tokens))."""
    s = source(src, trace, "llm_requests")

    def ranks(col: str) -> str:
        # average rank of each distinct value: rows up to and including it, minus half its ties
        return f"""(SELECT {col} AS v, sum(count(*)) OVER (ORDER BY {col})
                           - (count(*) - 1) / 2.0 AS r
                    FROM ok GROUP BY {col})"""

    row = s.sql(f"""
        WITH ok AS MATERIALIZED (SELECT prompt_tokens, output_tokens FROM t
                                 WHERE output_tokens > 0)
        SELECT corr(prompt_tokens, output_tokens) AS pearson,
               corr(ln(1 + prompt_tokens), ln(1 + output_tokens)) AS pearson_log,
               corr(rp.r, ro.r) AS spearman, count(*) AS n
        FROM ok JOIN {ranks('prompt_tokens')} rp ON ok.prompt_tokens = rp.v
                JOIN {ranks('output_tokens')} ro ON ok.output_tokens = ro.v""").row(0, named=True)
    return {k: (float(v) if v is not None else None) for k, v in row.items()}
