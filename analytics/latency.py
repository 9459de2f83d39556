"""Latency characterization of LLM request traces that carry latencies (the user-log and
benchmark-result adapters): TTFT, TPOT, end-to-end and queueing percentiles over time
windows and against load, SLO attainment and goodput.

Metrics (columns of `llm_requests`, seconds): `ttft_s` (time to first token), `tpot_s` (mean
time per output token after the first), `elapsed_s` (end to end), `queue_s`. Load of a
request: the arrival rate of its `bin_s` window (req/s) or the concurrency at its arrival
(requests in flight: arrived earlier and not finished, finish = arrival + elapsed_s).
Percentiles are over successful requests (`failed` false); failed requests miss every SLO.
All aggregation runs in DuckDB.
"""

from __future__ import annotations

import polars as pl

from servecast.analytics.source import source
from servecast.errors import InvalidInputError

METRICS = ("ttft_s", "tpot_s", "elapsed_s", "queue_s")
#: SLO names accepted by `parse_slo` / `slo_attainment` -> metric column
SLO_METRICS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "elapsed_s", "queue": "queue_s"}
QUANTILES = (0.5, 0.9, 0.99)


def latency_metrics(src, trace: str | None = None) -> list[str]:
    """The metrics of `METRICS` the trace has values for (empty: no latency data)."""
    s = source(src, trace, "llm_requests")
    return [m for m in METRICS if s.has_values(m)]


def _metrics(s, metrics) -> list[str]:
    have = [m for m in METRICS if s.has_values(m)]
    if metrics is None:
        return have
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise InvalidInputError(f"unknown latency metric {bad[0]!r}; use {', '.join(METRICS)}")
    return [m for m in metrics if m in have]


def _pcts(metric: str) -> str:
    return ", ".join(f"quantile_cont({metric}, {q}) AS p{round(q * 100)}" for q in QUANTILES)


def latency_percentiles(src, trace: str | None = None, bin_s: float | None = None,
                        metrics: list[str] | None = None) -> pl.DataFrame:
    """p50 / p90 / p99 (s) of each latency metric over successful requests, long form: one
    row per metric (columns metric, n, mean, p50, p90, p99) or, with `bin_s`, per metric and
    arrival window (first column t_s, the window start in s since the first arrival)."""
    s = source(src, trace, "llm_requests")
    ms = _metrics(s, metrics)
    if not ms:
        return pl.DataFrame()
    win = (f"floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {float(bin_s)}) "
           f"* {float(bin_s)}") if bin_s else None
    parts = []
    for m in ms:
        key = f"{win} AS t_s, " if win else ""
        parts.append(f"SELECT {key}'{m}' AS metric, count({m}) AS n, avg({m}) AS mean, "
                     f"{_pcts(m)} FROM t WHERE NOT failed AND {m} IS NOT NULL"
                     + (" AND arrival_s IS NOT NULL GROUP BY ALL" if win else ""))
    order = "metric, t_s" if win else "metric"
    return s.sql(" UNION ALL ".join(parts) + f" ORDER BY {order}")


def _load_sql(load: str, bin_s: float) -> str:
    """Per request: its metrics, failed and `load` (see module docstring)."""
    if load == "rate":
        return f"""
            SELECT *, count(*) OVER (PARTITION BY floor(arrival_s / {bin_s})) / {bin_s} AS load
            FROM t WHERE arrival_s IS NOT NULL"""
    if load == "concurrency":
        return """
            WITH ev AS (
                SELECT request_id, arrival_s AS ts, (elapsed_s IS NOT NULL)::INT AS d,
                       'a' AS kind FROM t WHERE arrival_s IS NOT NULL
                UNION ALL
                SELECT request_id, arrival_s + elapsed_s, -1, 'f' FROM t
                WHERE arrival_s IS NOT NULL AND elapsed_s IS NOT NULL),
            run AS (SELECT request_id, kind, sum(d) OVER (ORDER BY ts, kind DESC, request_id
                                                          ROWS UNBOUNDED PRECEDING) - d AS busy
                    FROM ev)
            SELECT t.*, run.busy AS load FROM t JOIN run USING (request_id)
            WHERE run.kind = 'a'"""
    raise InvalidInputError(f"unknown load measure {load!r}; use concurrency or rate")


def latency_vs_load(src, trace: str | None = None, load: str = "concurrency",
                    bins: int = 10, bin_s: float = 60.0,
                    metrics: list[str] | None = None) -> pl.DataFrame:
    """Latency percentiles against load: requests split into `bins` equal-count bins of
    their load (`"concurrency"` at arrival, or `"rate"` of their `bin_s` window, req/s).
    Long form: metric, bin (0 = lightest), load_lo, load_hi, load_mean, n, p50, p90, p99 (s),
    over successful requests."""
    s = source(src, trace, "llm_requests")
    ms = _metrics(s, metrics)
    if not ms:
        return pl.DataFrame()
    base = _load_sql(load, float(bin_s))
    parts = [f"""SELECT '{m}' AS metric, b AS bin, min(load)::DOUBLE AS load_lo,
                        max(load)::DOUBLE AS load_hi, avg(load) AS load_mean, count({m}) AS n,
                        {_pcts(m)}
                 FROM l WHERE NOT failed AND {m} IS NOT NULL GROUP BY b""" for m in ms]
    return s.sql(f"""WITH l AS (SELECT *, ntile({int(bins)}) OVER (ORDER BY load) - 1 AS b
                                FROM ({base}))
                     {' UNION ALL '.join(parts)} ORDER BY metric, bin""")


def parse_slo(items: list[str] | None) -> dict[str, float]:
    """SLO limits from `NAME:MS` items (`ttft:500`, `tpot:50`, `e2e:20000`, `queue:100`;
    commas also separate items) -> metric column -> limit in s. InvalidInputError names a
    bad item and the form."""
    out: dict[str, float] = {}
    for item in [x for it in items or [] for x in it.replace(",", " ").split()]:
        name, _, ms = item.partition(":")
        try:
            limit = float(ms)
        except ValueError:
            limit = float("nan")
        if name.lower() not in SLO_METRICS or not limit > 0:
            raise InvalidInputError(
                f"--slo {item!r}: give NAME:MILLISECONDS with NAME one of "
                f"{', '.join(SLO_METRICS)} and a positive limit, e.g. --slo ttft:500 "
                "--slo tpot:50")
        out[SLO_METRICS[name.lower()]] = limit / 1000.0
    return out


def slo_attainment(src, trace: str | None = None, slo: dict[str, float] | None = None,
                   bin_s: float | None = None) -> pl.DataFrame:
    """Share of requests meeting every limit of `slo` (metric column -> limit in s), and
    goodput. A request meets the SLO when it did not fail and each limited metric is known
    and within its limit. Columns ([t_s,] per `bin_s` window): requests, good, attainment
    (good / requests), goodput_rps (good requests per s of the span or window),
    goodput_tokens_per_s (their output tokens per s), and per limited metric the share
    within its own limit (`<metric>_ok`)."""
    if not slo:
        raise InvalidInputError("give at least one SLO limit, e.g. --slo ttft:500")
    s = source(src, trace, "llm_requests")
    bad = [m for m in slo if m not in METRICS]
    if bad:
        raise InvalidInputError(f"unknown SLO metric {bad[0]!r}; use {', '.join(METRICS)}")
    missing = [m for m in slo if not s.has_values(m)]
    if missing:
        raise InvalidInputError(f"{s.name}: has no {missing[0]} values; an SLO on it cannot "
                                "be checked (latency columns come from user-log and benchmark "
                                "result ingests)")
    ok = {m: f"(NOT failed AND coalesce({m} <= {float(lim)}, false))" for m, lim in slo.items()}
    good = " AND ".join(ok.values())
    per = ", ".join(f"avg({v}::INT) AS {m}_ok" for m, v in ok.items())
    if bin_s:
        b = float(bin_s)
        span = f"{b}"
        key = f"floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {b}) * {b} AS t_s, "
        tail = " WHERE arrival_s IS NOT NULL GROUP BY ALL ORDER BY t_s"
    else:
        span = "greatest(max(arrival_s) - min(arrival_s), 1e-9)"
        key, tail = "", ""
    return s.sql(f"""
        SELECT {key}count(*) AS requests, sum(({good})::INT)::BIGINT AS good,
               avg(({good})::INT) AS attainment,
               sum(({good})::INT)::DOUBLE / {span} AS goodput_rps,
               sum(CASE WHEN {good} THEN output_tokens ELSE 0 END)::DOUBLE / {span}
                   AS goodput_tokens_per_s, {per}
        FROM t{tail}""")
