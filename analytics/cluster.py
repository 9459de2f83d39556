"""GPU/CPU cluster characterization (Alibaba, Philly, Helios): job durations, status
breakdown, GPU request sizes, queueing delay (start - submit), utilization-series
statistics and the node inventory. Times in seconds; GPU requests in GPUs (fractions where
the source allocates GPU shares).

A cluster trace may fill several tables (jobs + nodes, or series only); each function reads
one and returns an empty frame where the trace has no such rows.
"""

from __future__ import annotations

import polars as pl

from servecast.analytics.source import Source
from servecast.store import Store

CDF_POINTS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
_DURATION = "coalesce(duration_s, end_s - start_s)"


def _src(store: Store, trace: str, table: str) -> Source:
    store.con.complete()
    store.trace_info(trace)  # raises UnknownNameError for an unknown trace
    return Source(store=store, trace=trace, table=table)


def has_rows(store: Store, trace: str, table: str) -> bool:
    """Whether `trace` has rows in `table`."""
    return bool(_src(store, trace, table).scalar("SELECT count(*) > 0 FROM t"))


def _quantiles(s: Source, expr: str, where: str = "TRUE") -> pl.DataFrame:
    """q, value: quantiles of `expr` (linear interpolation) over rows matching `where`."""
    probs = ", ".join(str(q) for q in CDF_POINTS)
    return s.sql(f"""SELECT unnest([{probs}]::DOUBLE[]) AS q,
                            unnest(quantile_cont({expr}, [{probs}])) AS value
                     FROM t WHERE {expr} IS NOT NULL AND {where}""")


def duration_cdf(store: Store, trace: str, by_status: bool = False) -> pl.DataFrame:
    """Job duration quantiles (s): [status,] q, value. Duration is duration_s, else
    end - start."""
    s = _src(store, trace, "cluster_jobs")
    if not by_status:
        return _quantiles(s, _DURATION)
    probs = ", ".join(str(q) for q in CDF_POINTS)
    # DuckDB cannot GROUP BY next to an UNNEST: aggregate per status first, unnest outside.
    return s.sql(f"""SELECT status, unnest([{probs}]::DOUBLE[]) AS q, unnest(qs) AS value
                     FROM (SELECT coalesce(status, '(none)') AS status,
                                  quantile_cont({_DURATION}, [{probs}]) AS qs
                           FROM t WHERE {_DURATION} IS NOT NULL GROUP BY ALL)
                     ORDER BY status, q""")


def duration_ecdf(store: Store, trace: str, points: int = 200) -> pl.DataFrame:
    """Empirical CDF of job duration on `points` log-spaced quantiles: value (s), cdf."""
    s = _src(store, trace, "cluster_jobs")
    probs = ", ".join(f"{i / (points - 1):.4f}" for i in range(points))
    return s.sql(f"""SELECT unnest(quantile_disc({_DURATION}, [{probs}])) AS value,
                            unnest([{probs}]::DOUBLE[]) AS cdf
                     FROM t WHERE {_DURATION} IS NOT NULL""")


def status_breakdown(store: Store, trace: str) -> pl.DataFrame:
    """status, jobs, share, gpu_hours (sum of gpu_request x duration / 3600, where known)."""
    s = _src(store, trace, "cluster_jobs")
    return s.sql(f"""SELECT coalesce(status, '(none)') AS status, count(*) AS jobs,
                            count(*) / sum(count(*)) OVER () AS share,
                            sum(gpu_request * coalesce(num_instances, 1) * {_DURATION}) / 3600
                                AS gpu_hours
                     FROM t GROUP BY ALL ORDER BY jobs DESC""")


def gpu_request_sizes(store: Store, trace: str) -> pl.DataFrame:
    """gpu_request (GPUs per instance), jobs, share, over jobs with a GPU request."""
    s = _src(store, trace, "cluster_jobs")
    return s.sql("""SELECT gpu_request, count(*) AS jobs, count(*) / sum(count(*)) OVER () AS share
                    FROM t WHERE gpu_request IS NOT NULL GROUP BY ALL ORDER BY gpu_request""")


def queueing_delay(store: Store, trace: str) -> pl.DataFrame:
    """Queueing delay (start - submit, s) quantiles: q, value; plus the share of jobs with
    zero delay in column zero_share (same on every row)."""
    s = _src(store, trace, "cluster_jobs")
    q = _quantiles(s, "start_s - submit_s")
    zero = s.scalar("SELECT avg((start_s - submit_s <= 0)::INT) FROM t "
                    "WHERE start_s IS NOT NULL AND submit_s IS NOT NULL")
    return q.with_columns(pl.lit(zero, dtype=pl.Float64).alias("zero_share"))


def job_summary(store: Store, trace: str) -> dict:
    """jobs, with_duration, duration_mean_s / p50 / p99, with_queue, queue_p50_s, queue_p99_s,
    gpu_jobs, span_s (first submit/start to last end)."""
    s = _src(store, trace, "cluster_jobs")
    return s.sql(f"""
        SELECT count(*) AS jobs, count({_DURATION}) AS with_duration,
               avg({_DURATION}) AS duration_mean_s,
               quantile_cont({_DURATION}, 0.5) AS duration_p50_s,
               quantile_cont({_DURATION}, 0.99) AS duration_p99_s,
               count(start_s - submit_s) AS with_queue,
               quantile_cont(start_s - submit_s, 0.5) AS queue_p50_s,
               quantile_cont(start_s - submit_s, 0.99) AS queue_p99_s,
               count(gpu_request) FILTER (WHERE gpu_request > 0) AS gpu_jobs,
               max(end_s) - least(min(submit_s), min(start_s)) AS span_s
        FROM t""").row(0, named=True)


def series_stats(store: Store, trace: str) -> pl.DataFrame:
    """Per series x metric: points, start, end, mean, std, cv, min, p5, p50, p95, max,
    peak_to_mean."""
    s = _src(store, trace, "cluster_series")
    return s.sql("""
        SELECT series, metric, count(value) AS points, min(ts) AS start, max(ts) AS "end",
               avg(value) AS mean, stddev_pop(value) AS std,
               stddev_pop(value) / nullif(avg(value), 0) AS cv, min(value) AS min,
               quantile_cont(value, 0.05) AS p5, quantile_cont(value, 0.5) AS p50,
               quantile_cont(value, 0.95) AS p95, max(value) AS max,
               max(value) / nullif(avg(value), 0) AS peak_to_mean
        FROM t GROUP BY ALL ORDER BY series, metric""")


def series_values(store: Store, trace: str, metric: str, every: str = "1 hour") -> pl.DataFrame:
    """Mean of `metric` per series per `every` interval: series, ts, value."""
    s = _src(store, trace, "cluster_series")
    return s.sql(f"""SELECT series, time_bucket(INTERVAL '{every}', ts) AS ts, avg(value) AS value
                     FROM t WHERE metric = ? GROUP BY ALL ORDER BY series, ts""", [metric])


def node_inventory(store: Store, trace: str) -> pl.DataFrame:
    """Per inventory (the source's node list, e.g. all nodes vs GPU nodes) and gpu_model:
    nodes, gpus, cpu_cores, memory_mib (sums), gpus_per_node (mean)."""
    s = _src(store, trace, "cluster_nodes")
    return s.sql("""SELECT coalesce(inventory, '(all)') AS inventory,
                           coalesce(gpu_model, '(none)') AS gpu_model, count(*) AS nodes,
                           sum(gpus)::BIGINT AS gpus, sum(cpu_cores) AS cpu_cores,
                           sum(memory_mib) AS memory_mib, avg(gpus) AS gpus_per_node
                    FROM t GROUP BY ALL ORDER BY inventory, nodes DESC""")


def characterize_cluster(store: Store, trace: str) -> dict:
    """Summary of a cluster trace: the sections its tables support."""
    out: dict = {"trace": trace, "kind": "cluster"}
    if has_rows(store, trace, "cluster_jobs"):
        out["jobs"] = {
            **job_summary(store, trace),
            "duration_quantiles": duration_cdf(store, trace),
            "status": status_breakdown(store, trace),
            "gpu_request_sizes": gpu_request_sizes(store, trace),
            "queueing_delay": queueing_delay(store, trace),
        }
    if has_rows(store, trace, "cluster_series"):
        out["series"] = series_stats(store, trace)
    if has_rows(store, trace, "cluster_nodes"):
        out["nodes"] = node_inventory(store, trace)
    return out
