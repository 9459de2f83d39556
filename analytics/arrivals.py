"""Arrival-process characterization of LLM request traces (times in s, rates in req/s).

Burstiness per segment (model x log type): inter-arrival mean/std, coefficient of variation,
Goh-Barabasi burstiness B = (sigma - mu) / (sigma + mu), index of dispersion of counts
(var/mean) at 1/10/60 s, and peak-to-mean of those counts. Empty bins count as zeros.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.analytics.fits import fit_all
from servecast.analytics.source import Source, source

#: bin widths (s) of the index of dispersion and peak-to-mean
DISPERSION_BINS = (1, 10, 60)
SEGMENT = ("model", "log_type")


def _seg_cols(by_segment: bool) -> list[str]:
    return list(SEGMENT) if by_segment else []


def _gaps_sql(seg: list[str]) -> str:
    """Inter-arrival gaps (s) within each segment, in arrival order."""
    part = f"PARTITION BY {', '.join(seg)} " if seg else ""
    return (f"SELECT {''.join(c + ', ' for c in seg)}arrival_s, arrival_s - lag(arrival_s) "
            f"OVER ({part}ORDER BY arrival_s, request_id) AS gap FROM t "
            "WHERE arrival_s IS NOT NULL")


def burstiness(src, trace: str | None = None, by_segment: bool = False) -> pl.DataFrame:
    """Arrival statistics, one row for the trace (or per model x log_type with `by_segment`).

    Columns: [model, log_type,] requests, span_s, rate_per_s, ia_mean_s, ia_std_s, cv,
    burstiness_b, zero_gap_share, idc_{1,10,60}s, peak_to_mean_{1,10,60}s.
    """
    s = source(src, trace, "llm_requests")
    seg = _seg_cols(by_segment)
    sel = "".join(f"coalesce({c}, '(none)') AS {c}, " for c in seg)
    keys = ", ".join(seg)
    group = f"GROUP BY {keys}" if seg else ""
    joins = []
    disp_cols = []
    for w in DISPERSION_BINS:
        # counts per non-empty bin; empty bins enter through the number of bins in the span
        joins.append(f"""b{w} AS (SELECT {keys + ',' if seg else ''}
                sum(c)::DOUBLE AS n, sum(c * c)::DOUBLE AS s2, max(c) AS peak
            FROM (SELECT {keys + ',' if seg else ''} count(*) AS c FROM base
                  GROUP BY {keys + ',' if seg else ''} floor((arrival_s - t0) / {w}))
            {group})""")
        disp_cols.append(f"""
            (b{w}.s2 / nb{w} - (b{w}.n / nb{w}) ^ 2) / (b{w}.n / nb{w}) AS idc_{w}s,
            b{w}.peak / (b{w}.n / nb{w}) AS peak_to_mean_{w}s""")
    on = lambda b: (" USING (" + keys + ")") if seg else " ON TRUE"  # noqa: E731
    query = f"""
        WITH base AS (SELECT {sel}arrival_s, request_id,
                             min(arrival_s) OVER ({'PARTITION BY ' + keys if seg else ''}) AS t0
                      FROM t WHERE arrival_s IS NOT NULL),
        gaps AS (SELECT {keys + ',' if seg else ''} arrival_s - lag(arrival_s) OVER (
                    {'PARTITION BY ' + keys if seg else ''} ORDER BY arrival_s, request_id) AS gap
                 FROM base),
        g AS (SELECT {keys + ',' if seg else ''} count(gap) AS n_gaps, avg(gap) AS ia_mean_s,
                     stddev_pop(gap) AS ia_std_s, avg((gap = 0)::INT) AS zero_gap_share
              FROM gaps {group}),
        a AS (SELECT {keys + ',' if seg else ''} count(*) AS requests,
                     max(arrival_s) - min(arrival_s) AS span_s FROM base {group}),
        {', '.join(joins)}
        SELECT {keys + ',' if seg else ''} requests, span_s,
               requests / nullif(span_s, 0) AS rate_per_s, ia_mean_s, ia_std_s,
               ia_std_s / nullif(ia_mean_s, 0) AS cv,
               (ia_std_s - ia_mean_s) / nullif(ia_std_s + ia_mean_s, 0) AS burstiness_b,
               zero_gap_share, {', '.join(disp_cols)}
        FROM (SELECT *, {', '.join(f'floor(span_s / {w}) + 1 AS nb{w}' for w in DISPERSION_BINS)}
              FROM a JOIN g{on('g')}) x
        {' '.join(f'JOIN b{w}{on(w)}' for w in DISPERSION_BINS)}
        {'ORDER BY requests DESC' if seg else ''}"""
    return s.sql(query)


def rate_series(src, trace: str | None = None, bin_s: float = 60.0,
                max_bins: int = 100_000) -> pl.DataFrame:
    """Requests per `bin_s` bin from the first arrival, empty bins included.

    Columns: t_s (bin start, s since trace start), requests, rate_per_s. With more than
    `max_bins` bins only the non-empty ones are returned (use a coarser bin for plotting).
    """
    s = source(src, trace, "llm_requests")
    span = s.scalar("SELECT max(arrival_s) - min(arrival_s) FROM t") or 0.0
    nb = int(span // bin_s) + 1
    counts = f"""SELECT floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {bin_s})::BIGINT
                    AS k, count(*) AS requests FROM t WHERE arrival_s IS NOT NULL GROUP BY k"""
    if nb <= max_bins:
        query = f"""SELECT k * {bin_s} AS t_s, coalesce(requests, 0) AS requests
                    FROM range({nb}) r(k) LEFT JOIN ({counts}) c USING (k) ORDER BY k"""
    else:
        query = f"SELECT k * {bin_s} AS t_s, requests FROM ({counts}) ORDER BY k"
    return s.sql(query).with_columns((pl.col("requests") / bin_s).alias("rate_per_s"))


def weekly_profile(src, trace: str | None = None) -> pl.DataFrame:
    """Mean request rate by day-of-week x hour-of-day (days counted from the trace start,
    since timestamps are relative). Columns: day (0-6), hour (0-23), days_seen, requests,
    rate_per_s. Empty for traces shorter than two days."""
    s = source(src, trace, "llm_requests")
    span = s.scalar("SELECT max(arrival_s) - min(arrival_s) FROM t") or 0.0
    if span < 2 * 86400:
        return pl.DataFrame(schema={"day": pl.Int64, "hour": pl.Int64, "days_seen": pl.Int64,
                                    "requests": pl.Int64, "rate_per_s": pl.Float64})
    return s.sql(f"""
        WITH r AS (SELECT (arrival_s - (SELECT min(arrival_s) FROM t)) AS x FROM t
                   WHERE arrival_s IS NOT NULL),
        hours AS (SELECT h, (h // 24) % 7 AS day, h % 24 AS hour
                  FROM range({int(span // 3600) + 1}) r(h)),
        seen AS (SELECT day, hour, count(*) AS days_seen FROM hours GROUP BY ALL),
        c AS (SELECT (floor(x / 86400)::BIGINT % 7) AS day, (floor(x / 3600)::BIGINT % 24) AS hour,
                     count(*) AS requests FROM r GROUP BY ALL)
        SELECT day, hour, days_seen, coalesce(requests, 0) AS requests,
               coalesce(requests, 0) / (days_seen * 3600.0) AS rate_per_s
        FROM seen LEFT JOIN c USING (day, hour) ORDER BY day, hour""")


def interarrival_sample(src, trace: str | None = None, n: int = 200_000,
                        seed: int = 0) -> np.ndarray:
    """Inter-arrival gaps (s) of the whole trace; a seeded uniform sample of `n` when larger."""
    s = source(src, trace, "llm_requests")
    q = f"SELECT gap FROM ({_gaps_sql([])}) WHERE gap IS NOT NULL"
    total = s.scalar("SELECT count(arrival_s) - 1 FROM t") or 0
    if total > n:
        q += f" USING SAMPLE reservoir({n} ROWS) REPEATABLE ({seed})"
    return s.sql(q)["gap"].to_numpy()


def interarrival_fits(src, trace: str | None = None, n: int = 200_000) -> pl.DataFrame:
    """MLE fits of the positive inter-arrival gaps (exponential, gamma, Weibull, lognormal):
    one row per family with params, loglik, aic, ks and best_ks / best_aic flags.
    Zero gaps (same timestamp) are excluded; their share is in `burstiness`."""
    return fit_all(interarrival_sample(src, trace, n))


__all__ = ["burstiness", "rate_series", "weekly_profile", "interarrival_sample",
           "interarrival_fits", "Source"]
