"""Failures of LLM requests (`failed`; BurstGPT convention: response tokens 0) over time and
against load (requests per bin)."""

from __future__ import annotations

import math

import polars as pl

from servecast.analytics.source import source


def failure_summary(src, trace: str | None = None) -> dict:
    """requests, failed, failure_rate (share)."""
    s = source(src, trace, "llm_requests")
    return s.sql("""SELECT count(*) AS requests, sum(failed::INT)::BIGINT AS failed,
                           avg(failed::INT) AS failure_rate FROM t""").row(0, named=True)


def failure_series(src, trace: str | None = None, bin_s: float = 3600.0) -> pl.DataFrame:
    """Per non-empty time bin: t_s (bin start, s), requests, failed, failure_rate."""
    s = source(src, trace, "llm_requests")
    return s.sql(f"""
        SELECT k * {bin_s} AS t_s, count(*) AS requests, sum(failed::INT)::BIGINT AS failed,
               avg(failed::INT) AS failure_rate
        FROM (SELECT floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {bin_s}) AS k, failed
              FROM t WHERE arrival_s IS NOT NULL)
        GROUP BY k ORDER BY k""")


def failure_vs_load(src, trace: str | None = None, bin_s: float = 60.0,
                    groups: int = 10) -> pl.DataFrame:
    """Failure rate against load: `bin_s` bins grouped into `groups` load quantiles.

    Columns: load_group (1 = lightest), bins, load_min / load_max / load_mean (requests per
    bin), requests, failed, failure_rate.
    """
    s = source(src, trace, "llm_requests")
    return s.sql(f"""
        WITH b AS (SELECT count(*) AS load, sum(failed::INT) AS failed
                   FROM (SELECT floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {bin_s}) AS k,
                                failed FROM t WHERE arrival_s IS NOT NULL) GROUP BY k),
        g AS (SELECT *, ntile({int(groups)}) OVER (ORDER BY load) AS load_group FROM b)
        SELECT load_group, count(*) AS bins, min(load) AS load_min, max(load) AS load_max,
               avg(load) AS load_mean, sum(load)::BIGINT AS requests,
               sum(failed)::BIGINT AS failed, sum(failed) / sum(load) AS failure_rate
        FROM g GROUP BY load_group ORDER BY load_group""")


def failure_load_correlation(src, trace: str | None = None, bin_s: float = 60.0) -> float | None:
    """Pearson correlation between requests per `bin_s` bin and the failure rate of that bin
    (None when undefined, e.g. no failures)."""
    s = source(src, trace, "llm_requests")
    r = s.scalar(f"""
        SELECT corr(load, rate) FROM (
            SELECT count(*) AS load, avg(failed::INT) AS rate
            FROM (SELECT floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {bin_s}) AS k, failed
                  FROM t WHERE arrival_s IS NOT NULL) GROUP BY k)""")
    return float(r) if r is not None and math.isfinite(r) else None  # DuckDB: NaN, no failures
