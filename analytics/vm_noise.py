"""VM performance noise (Azure VM Noise / TUNA): variability of repeated benchmark runs per
benchmark x SKU x region x lifespan, and drift over time of long-lived VMs.

Variability of a group: cv (std / mean), p1 and p99 relative to the median (p1_rel =
p1 / median). Drift of one VM: least-squares slope of value / (group median) against time
(days), i.e. the relative change per day; a group's drift is the median over its VMs.
"""

from __future__ import annotations

import polars as pl

from servecast.analytics.source import source
from servecast.store import Store

GROUP = ("test_suite", "test_name", "vm_sku", "vm_region", "vm_lifespan", "unit")
_KEYS = ", ".join(GROUP)


def variability(store: Store, trace: str) -> pl.DataFrame:
    """Per group (test_suite, test_name, vm_sku, vm_region, vm_lifespan, unit): runs, vms,
    mean, median, cv, p1_rel, p99_rel, iqr_rel ((p75 - p25) / median); by cv descending."""
    s = source(store, trace, "vm_measurements")
    return s.sql(f"""
        SELECT {_KEYS}, count(*) AS runs, count(DISTINCT vm_id) AS vms, avg(value) AS mean,
               median(value) AS median, stddev_pop(value) / nullif(avg(value), 0) AS cv,
               quantile_cont(value, 0.01) / nullif(median(value), 0) AS p1_rel,
               quantile_cont(value, 0.99) / nullif(median(value), 0) AS p99_rel,
               (quantile_cont(value, 0.75) - quantile_cont(value, 0.25))
                   / nullif(median(value), 0) AS iqr_rel
        FROM t GROUP BY ALL ORDER BY cv DESC NULLS LAST""")


def by_sku(store: Store, trace: str) -> pl.DataFrame:
    """Median over benchmarks of the group cv, p1_rel and p99_rel, per vm_sku x vm_lifespan."""
    v = variability(store, trace)
    return (v.group_by("vm_sku", "vm_lifespan")
             .agg(pl.len().alias("benchmarks"), pl.col("cv").median().alias("cv_median"),
                  pl.col("p1_rel").median().alias("p1_rel_median"),
                  pl.col("p99_rel").median().alias("p99_rel_median"))
             .sort("vm_sku", "vm_lifespan"))


def drift(store: Store, trace: str, min_days: float = 7.0, min_runs: int = 20) -> pl.DataFrame:
    """Drift of VMs observed for at least `min_days` with at least `min_runs` runs.

    Per group: vms, days_median (observation span), drift_per_day_median (relative change
    of value per day, median over VMs), drift_abs_p90 (90th percentile of |drift| per day).
    """
    s = source(store, trace, "vm_measurements")
    return s.sql(f"""
        WITH g AS (SELECT {_KEYS}, median(value) AS med FROM t GROUP BY ALL),
        v AS (SELECT {_KEYS}, vm_id, count(*) AS runs,
                     (epoch(max(start_time)) - epoch(min(start_time))) / 86400 AS days,
                     regr_slope(value / nullif(med, 0), epoch(start_time) / 86400) AS slope
              FROM t JOIN g USING ({_KEYS}) WHERE start_time IS NOT NULL GROUP BY ALL)
        SELECT {_KEYS}, count(*) AS vms, median(days) AS days_median,
               median(slope) AS drift_per_day_median,
               quantile_cont(abs(slope), 0.9) AS drift_abs_p90
        FROM v WHERE days >= {float(min_days)} AND runs >= {int(min_runs)} GROUP BY ALL
        ORDER BY drift_abs_p90 DESC NULLS LAST""")


def vm_series(store: Store, trace: str, test_name: str, every: str = "1 day") -> pl.DataFrame:
    """Median value of `test_name` per VM lifespan x SKU per `every` bucket: ts, value."""
    s = source(store, trace, "vm_measurements")
    return s.sql(f"""SELECT vm_lifespan, vm_sku, time_bucket(INTERVAL '{every}', start_time) AS ts,
                            median(value) AS value, count(*) AS runs
                     FROM t WHERE test_name = ? AND start_time IS NOT NULL
                     GROUP BY ALL ORDER BY vm_lifespan, vm_sku, ts""", [test_name])


def characterize_vm(store: Store, trace: str) -> dict:
    """Summary of a VM-noise trace: size, variability per SKU, the noisiest groups, drift."""
    s = source(store, trace, "vm_measurements")
    head = s.sql("""SELECT count(*) AS runs, count(DISTINCT vm_id) AS vms,
                           count(DISTINCT test_name) AS benchmarks,
                           min(start_time) AS first, max(start_time) AS last FROM t""")
    var = variability(store, trace)
    return {"trace": trace, "kind": "vm", **head.row(0, named=True),
            "by_sku": by_sku(store, trace), "noisiest": var.head(20),
            "groups": var.height, "drift": drift(store, trace).head(20)}
