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


GAPS_SQL = """SELECT arrival_s - lag(arrival_s) OVER (ORDER BY arrival_s, request_id) AS gap
              FROM t WHERE arrival_s IS NOT NULL"""


def burstiness(src, trace: str | None = None, by_segment: bool = False) -> pl.DataFrame:
    """Arrival statistics, one row for the trace (or per model x log_type with `by_segment`).

    Columns: [model, log_type,] requests, span_s, rate_per_s, ia_mean_s, ia_std_s, cv,
    burstiness_b, zero_gap_share, idc_{1,10,60}s, peak_to_mean_{1,10,60}s.

    Counts per bin come from runs in arrival order (a row's position p within its bin;
    sum over rows of 2p - 1 is the sum of squared bin counts), not from a hash aggregate
    over millions of bins.
    """
    s = source(src, trace, "llm_requests")
    seg = _seg_cols(by_segment)
    keys = "".join(f"{c}, " for c in seg)  # "model, log_type, " or ""
    sel = "".join(f"coalesce({c}, '(none)') AS {c}, " for c in seg)
    part = f"PARTITION BY {', '.join(seg)}" if seg else ""
    group = f"GROUP BY {', '.join(seg)}" if seg else ""
    ks = ", ".join(f"floor(x / {w})::BIGINT AS k{w}" for w in DISPERSION_BINS)
    starts = ", ".join(f"(k{w} IS DISTINCT FROM lag(k{w}) OVER win) AS s{w}"
                       for w in DISPERSION_BINS)
    pos = ", ".join(f"r - max(CASE WHEN s{w} THEN r END) OVER run + 1 AS p{w}"
                    for w in DISPERSION_BINS)
    aggs = ", ".join(f"sum(2 * p{w} - 1)::DOUBLE AS s2_{w}, max(p{w}) AS peak_{w}"
                     for w in DISPERSION_BINS)
    cols = []
    for w in DISPERSION_BINS:
        nb = f"(floor(span_s / {w}) + 1)"  # bins in the span, empty ones included
        mean = f"(requests / {nb})"
        cols.append(f"(s2_{w} / {nb} - {mean} ^ 2) / {mean} AS idc_{w}s, "
                    f"peak_{w} / {mean} AS peak_to_mean_{w}s")
    return s.sql(f"""
        WITH o AS (SELECT {sel}request_id, arrival_s - min(arrival_s) OVER ({part}) AS x
                   FROM t WHERE arrival_s IS NOT NULL),
        w AS (SELECT {keys}x, x - lag(x) OVER win AS gap, row_number() OVER win AS r, {starts}
              FROM (SELECT *, {ks} FROM o) WINDOW win AS ({part} ORDER BY x, request_id)),
        p AS (SELECT {keys}x, gap, {pos}
              FROM w WINDOW run AS ({part} ORDER BY r ROWS UNBOUNDED PRECEDING)),
        g AS (SELECT {keys}count(*) AS requests, max(x) AS span_s, avg(gap) AS ia_mean_s,
                     stddev_pop(gap) AS ia_std_s, avg((gap = 0)::INT) AS zero_gap_share, {aggs}
              FROM p {group})
        SELECT {keys}requests, span_s, requests / nullif(span_s, 0) AS rate_per_s,
               ia_mean_s, ia_std_s, ia_std_s / nullif(ia_mean_s, 0) AS cv,
               (ia_std_s - ia_mean_s) / nullif(ia_std_s + ia_mean_s, 0) AS burstiness_b,
               zero_gap_share, {', '.join(cols)}
        FROM g {'ORDER BY requests DESC' if seg else ''}""")


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
        query = f"""SELECT (k * {bin_s})::DOUBLE AS t_s, coalesce(requests, 0) AS requests
                    FROM range({nb}) r(k) LEFT JOIN ({counts}) c USING (k) ORDER BY k"""
    else:
        query = f"SELECT (k * {bin_s})::DOUBLE AS t_s, requests FROM ({counts}) ORDER BY k"
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


def periodic_profile(src, trace: str | None = None, period: str = "day") -> pl.DataFrame:
    """Mean request rate by hour of day (`period="day"`) or by day of week (`"week"`),
    counted from the trace start (timestamps are relative), averaged over the periods the
    trace covers: the BurstGPT paper's daily and weekly patterns.

    Columns: slot (hour 0-23 or day 0-6), seen (how many such hours / days the span
    covers), requests, rate_per_s. A slot the span never reaches is left out."""
    if period not in ("day", "week"):
        raise ValueError(f"unknown period {period!r}; use day or week")
    slot_s, slots = (3600, 24) if period == "day" else (86400, 7)
    s = source(src, trace, "llm_requests")
    span = s.scalar("SELECT max(arrival_s) - min(arrival_s) FROM t") or 0.0
    return s.sql(f"""
        WITH c AS (SELECT floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {slot_s})::BIGINT
                          % {slots} AS slot, count(*) AS requests
                   FROM t WHERE arrival_s IS NOT NULL GROUP BY ALL),
        seen AS (SELECT k % {slots} AS slot, count(*) AS seen
                 FROM range({int(span // slot_s) + 1}) r(k) GROUP BY ALL)
        SELECT slot, seen, coalesce(requests, 0) AS requests,
               coalesce(requests, 0) / (seen * {slot_s}.0) AS rate_per_s
        FROM seen LEFT JOIN c USING (slot) ORDER BY slot""")


def timestamp_quantization(src, trace: str | None = None, n: int = 200_000,
                           max_zero_share: float = 0.1) -> dict:
    """Whether arrival times are quantized (logged in batches or at a coarse resolution),
    which makes continuous inter-arrival fits meaningless: `gap_quantization` of the
    trace's inter-arrival gaps (a seeded sample of `n`).
    Mooncake's conversation trace: 90% of gaps are 0, positive ones 3 s apart."""
    return gap_quantization(interarrival_sample(src, trace, n), max_zero_share)


def gap_quantization(gaps: np.ndarray, max_zero_share: float = 0.1) -> dict:
    """Quantization of inter-arrival `gaps` (s). zero_gap_share: share of gaps that are
    exactly 0 (same timestamp). grid_s: the step the positive gaps sit on: the smallest
    positive gap, when at least 90% of the positive gaps are within 2% of a multiple of it
    (None otherwise); grid_share: that share. quantized: zero_gap_share >= `max_zero_share`;
    message: what that means, else None."""
    g = np.asarray(gaps, dtype=float)
    pos = g[g > 0]
    zero = float((g == 0).mean()) if g.size else 0.0
    grid, share = None, None
    if pos.size >= 10:
        step = float(pos.min())
        ratio = pos / step
        share = float((np.abs(ratio - np.rint(ratio)) <= 0.02).mean())
        grid = step if share >= 0.9 else None
    out = {"gaps": int(g.size), "zero_gap_share": zero, "grid_s": grid, "grid_share": share,
           "quantized": bool(g.size and zero >= max_zero_share), "message": None}
    if out["quantized"]:
        on = f" on a {grid:.4g} s grid" if grid is not None else ""
        out["message"] = (
            f"timestamps are quantized: {zero:.0%} of inter-arrival gaps are 0 (requests "
            f"logged in batches{on}); continuous inter-arrival fits (exponential, gamma, "
            "Weibull, lognormal) do not apply and are not reported. Use the request counts "
            "per bin (index of dispersion, peak-to-mean) instead.")
    return out


def interarrival_sample(src, trace: str | None = None, n: int = 200_000,
                        seed: int = 0) -> np.ndarray:
    """Inter-arrival gaps (s) of the whole trace; a seeded uniform sample of `n` when larger."""
    s = source(src, trace, "llm_requests")
    q = f"SELECT gap FROM ({GAPS_SQL}) WHERE gap IS NOT NULL"
    total = s.scalar("SELECT count(arrival_s) - 1 FROM t") or 0
    if total > n:
        q += f" USING SAMPLE reservoir({n} ROWS) REPEATABLE ({seed})"
    return s.sql(q)["gap"].to_numpy()


def interarrival_fits(src, trace: str | None = None, n: int = 200_000) -> pl.DataFrame:
    """MLE fits of the positive inter-arrival gaps (exponential, gamma, Weibull, lognormal):
    one row per family with params, loglik, aic, ks and best_ks / best_aic flags.
    Zero gaps (same timestamp) are excluded; their share is in `burstiness`."""
    return fit_all(interarrival_sample(src, trace, n))


__all__ = ["burstiness", "rate_series", "weekly_profile", "periodic_profile",
           "timestamp_quantization", "gap_quantization", "interarrival_sample",
           "interarrival_fits", "Source"]
