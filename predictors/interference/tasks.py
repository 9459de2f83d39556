"""Interference tasks from `vm_measurements` (Azure VM Noise / TUNA): windows + labels.

Values are direction-normalized against the benchmark's SKU-and-region median of the
training period: rel = value / median for higher-better units (MiB_s, IOPS, TPS, ops/s),
median / value for lower-better ones (ms, ns, us Per Event); perf = min(1, rel).

- `temporal_task`: long-lived VMs. Each VM's runs are cut into benchmark-suite iterations
  (the suite runs every benchmark once in random order: a benchmark seen again opens the
  next iteration). Window = all metrics of the last W iterations (t = iteration index) plus
  `app_perf` (that iteration's application perf); label = the next iteration's mean
  PostgreSQL/Redis throughput perf. Split per SKU: test = the held-out VM after the time
  cutoff, train/val = the other VMs before it.
- `fingerprint_task`: short-lived VMs. Window = the micro-benchmarks (all suites but
  PostgreSQL/Redis) that completed on that VM instance before the application run started
  (t = their order; a last step names the application, metric `app:<test>` = 1, and carries
  `vm_age_h`, the hours since the instance's first run began); label = that application run's
  perf; a marker metric `sku:<vm_sku>` = 1 at every step (optional) names the SKU.
  Split by time (instance start): train < val < test.

Short-lived `VM_id`s are ranks within each benchmark file, not instance keys across files
(a VM missing from a file shifts the ids after it): `short_instances` re-aligns every file to
the largest one by the locally constant id offset that best matches run times; runs that
match no instance within `TOL_S` are left out. `start_time` is when a run finished (start
times differ by the later run's runtime), so a run started at start_time - runtime_s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError

APP_SUITES = ("PostgreSQL", "Redis")
APP_UNITS = ("TPS", "Requests Per Second")  # application throughput: the labels
TOL_S = 3 * 3600  # a short-lived instance runs its suite within a few hours

_TIME_UNITS = {"ms", "msec", "us", "usec", "ns", "nsec", "s", "sec", "secs", "second",
               "seconds", "min", "minute", "minutes", "latency"}
_LOWER = re.compile(r"(per event|per op|per call|latency)$")
_HIGHER = re.compile(r"(per second|per sec|_s$|/s$|_sec$|/sec$|ps$|iops|tps|ops|bandwidth|"
                     r"throughput)")


def unit_direction(unit: str, overrides: dict[str, int] | None = None) -> int:
    """+1 if larger is better (throughput: MiB_s, IOPS, TPS, Bogo Ops_s, ...), -1 if smaller
    is better (time: ms, msec, ns, us Per Event, ...). Raises InvalidInputError otherwise."""
    if overrides and unit in overrides:
        return overrides[unit]
    u = unit.strip().lower().replace("\u00b5", "u")
    if u in _TIME_UNITS or _LOWER.search(u):
        return -1
    if _HIGHER.search(u):
        return 1
    raise InvalidInputError(
        f"unit {unit!r}: cannot tell whether larger is better; pass "
        f"directions={{{unit!r}: 1 or -1}} (1 = higher-better, -1 = lower-better)")


@dataclass
class Task:
    """Windows of one task. `windows`: window_id, split (train/val/test), vm_sku, vm, time;
    `metrics` long [window_id, t, metric, value]; `labels` [window_id, perf]."""

    name: str
    metrics: pl.DataFrame
    labels: pl.DataFrame
    windows: pl.DataFrame
    target_metric: str | None = None

    def part(self, split: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(metrics, labels) of one split, labels in time order."""
        w = self.windows.filter(pl.col("split") == split).sort("time", "window_id")
        ids = w["window_id"].implode()
        lab = w.select("window_id").join(self.labels, on="window_id", how="left",
                                         maintain_order="left")
        return self.metrics.filter(pl.col("window_id").is_in(ids)), lab

    def groups(self, split: str, by: str = "vm_sku") -> pl.DataFrame:
        """[window_id, group] of one split (for per-SKU evaluation)."""
        return (self.windows.filter(pl.col("split") == split)
                .select("window_id", pl.col(by).cast(pl.Utf8).alias("group")))

    def summary(self) -> pl.DataFrame:
        """Windows and mean/p10 label per split x SKU."""
        return (self.windows.join(self.labels, on="window_id")
                .group_by("split", "vm_sku")
                .agg(pl.len().alias("windows"), pl.col("vm").n_unique().alias("vms"),
                     pl.col("perf").mean().alias("perf_mean"),
                     pl.col("perf").quantile(0.1).alias("perf_p10"),
                     pl.col("time").min().alias("first"), pl.col("time").max().alias("last"))
                .sort("split", "vm_sku"))


# -- shared steps ----------------------------------------------------------------------------
def _rows(store, trace: str, lifespan: str, skus, until: str | None = None) -> pl.DataFrame:
    """Runs of one lifespan (ending before `until`, an ISO date, if given): vm_sku, vm_region,
    vm_id, suite, metric, unit, end_s, runtime_s, value."""
    sku_sql = ""
    params: list = [trace, lifespan]
    if until:
        sku_sql += " AND start_time < ?::TIMESTAMP"
        params.append(until)
    if skus:
        sku_sql += f" AND vm_sku IN ({', '.join('?' for _ in skus)})"
        params += list(skus)
    df = store.sql(
        f"""SELECT vm_sku, coalesce(vm_region, '') AS vm_region, vm_id, test_suite AS suite,
                   test_suite || '/' || test_name || ' [' || unit || ']' AS metric, unit,
                   epoch(start_time) AS end_s, coalesce(runtime_s, 0) AS runtime_s, value
            FROM vm_measurements
            WHERE trace = ? AND vm_lifespan = ? AND start_time IS NOT NULL{sku_sql}""", params)
    if df.height == 0:
        raise InvalidInputError(
            f"trace {trace!r} has no {lifespan}-lived vm_measurements rows"
            + (f" for SKUs {', '.join(skus)}" if skus else "")
            + "; ingest the Azure VM Noise data (`servecast ingest azure-vm-noise FOLDER`)")
    return df


def _directions(units: pl.Series, overrides: dict | None) -> pl.DataFrame:
    u = units.unique().to_list()
    return pl.DataFrame({"unit": u, "dir": [unit_direction(x, overrides) for x in u]})


def _relative(df: pl.DataFrame, train_mask: pl.Expr, overrides: dict | None) -> pl.DataFrame:
    """Add `rel` (direction-normalized value / training-period median per metric, SKU and
    region); drops non-positive values and metrics without training data."""
    df = df.filter(pl.col("value") > 0).join(_directions(df["unit"], overrides), on="unit")
    med = (df.filter(train_mask).group_by("metric", "vm_sku", "vm_region")
           .agg(pl.col("value").median().alias("median")))
    df = df.join(med, on=["metric", "vm_sku", "vm_region"])
    return df.with_columns(
        pl.when(pl.col("dir") > 0).then(pl.col("value") / pl.col("median"))
        .otherwise(pl.col("median") / pl.col("value")).alias("rel"))


def _is_app() -> pl.Expr:
    return pl.col("suite").is_in(APP_SUITES) & pl.col("unit").is_in(APP_UNITS)


# -- temporal ------------------------------------------------------------------------------
def iterations(runs: pl.DataFrame) -> pl.DataFrame:
    """Add `iteration` per VM to runs sorted by (vm_sku, vm_id, end_s): a new iteration opens
    when a benchmark (metric) repeats within the current one."""
    runs = runs.sort("vm_sku", "vm_id", "end_s", "metric")
    vm = runs.select(pl.struct("vm_sku", "vm_id").rank("dense")).to_series().to_numpy()
    metric = runs["metric"].cast(pl.Categorical).to_physical().to_numpy()
    out = np.empty(len(metric), dtype=np.int64)
    cur_vm, seen, it = -1, set(), 0
    for i, (v, m) in enumerate(zip(vm.tolist(), metric.tolist(), strict=True)):
        if v != cur_vm:
            cur_vm, seen, it = v, set(), 0
        elif m in seen:
            seen, it = set(), it + 1
        seen.add(m)
        out[i] = it
    return runs.with_columns(pl.Series("iteration", out))


def temporal_task(store, trace: str = "azure_vm_noise", window: int = 6,
                  skus: list[str] | None = None, test_frac: float = 0.35,
                  val_frac: float = 0.15, directions: dict | None = None,
                  max_windows_per_vm: int | None = None, until: str | None = None) -> Task:
    """Temporal task on long-lived VMs (see module docstring). Per SKU, the VM with the most
    runs is held out for test after the time cutoff (the `1 - test_frac` quantile of
    iteration end times); the others train before `cutoff - val span` and validate in
    between. `max_windows_per_vm` keeps each VM's most recent windows and `until` (ISO date)
    drops later runs (quick runs)."""
    raw = _rows(store, trace, "long", skus, until)
    runs = iterations(raw)
    it = (runs.group_by("vm_sku", "vm_id", "iteration")
          .agg(pl.col("end_s").max().alias("time")))
    cut = (it.group_by("vm_sku")
           .agg(pl.col("time").quantile(1 - test_frac).alias("cut"),
                pl.col("time").quantile(1 - test_frac - val_frac).alias("vcut")))
    held = (raw.group_by("vm_sku", "vm_id").len().sort("len", "vm_id", descending=[True, False])
            .group_by("vm_sku", maintain_order=True).first().select("vm_sku",
                                                                    pl.col("vm_id").alias("held")))
    runs = runs.join(cut, on="vm_sku").join(held, on="vm_sku")
    rel = _relative(runs, (pl.col("end_s") < pl.col("cut")) & (pl.col("vm_id") != pl.col("held")),
                    directions)
    per_it = (rel.group_by("vm_sku", "vm_id", "iteration", "metric")
              .agg(pl.col("rel").mean().alias("value")))
    app = (rel.filter(_is_app()).group_by("vm_sku", "vm_id", "iteration")
           .agg(pl.col("rel").clip(upper_bound=1.0).mean().alias("app_perf")))
    it = it.join(app, on=["vm_sku", "vm_id", "iteration"], how="left")
    per_it = pl.concat([per_it, app.select("vm_sku", "vm_id", "iteration",
                                           pl.lit("app_perf").alias("metric"),
                                           pl.col("app_perf").alias("value"))])
    # window ending at iteration k -> label = app perf of iteration k + 1
    win = (it.sort("vm_sku", "vm_id", "iteration")
           .with_columns(pl.col("app_perf").shift(-1).over("vm_sku", "vm_id").alias("perf"),
                         pl.col("time").shift(-1).over("vm_sku", "vm_id").alias("label_time"))
           .filter(pl.col("perf").is_not_null() & (pl.col("iteration") >= window - 1))
           .join(cut, on="vm_sku").join(held, on="vm_sku")
           .with_columns(
               pl.when((pl.col("vm_id") == pl.col("held")) & (pl.col("time") >= pl.col("cut")))
               .then(pl.lit("test"))
               .when((pl.col("vm_id") != pl.col("held")) & (pl.col("label_time") < pl.col("vcut")))
               .then(pl.lit("train"))
               .when((pl.col("vm_id") != pl.col("held")) & (pl.col("time") >= pl.col("vcut"))
                     & (pl.col("label_time") < pl.col("cut")))
               .then(pl.lit("val")).otherwise(None).alias("split"))
           .filter(pl.col("split").is_not_null()))
    if max_windows_per_vm:
        win = win.sort("time").group_by("vm_sku", "vm_id", "split", maintain_order=True) \
            .tail(max_windows_per_vm)
    win = win.sort("vm_sku", "vm_id", "iteration").with_row_index("window_id") \
        .with_columns(pl.col("window_id").cast(pl.Int64))
    offsets = pl.DataFrame({"lag": np.arange(window, dtype=np.int64)})
    steps = (win.select("window_id", "vm_sku", "vm_id", "iteration").join(offsets, how="cross")
             .with_columns((pl.col("iteration") - pl.col("lag")).alias("step")))
    metrics = (steps.join(per_it, left_on=["vm_sku", "vm_id", "step"],
                          right_on=["vm_sku", "vm_id", "iteration"])
               .select("window_id", pl.col("step").cast(pl.Float64).alias("t"),
                       pl.col("metric").cast(pl.Categorical), "value"))
    windows = win.select("window_id", "split", "vm_sku",
                         (pl.col("vm_sku") + "/" + pl.col("vm_id").cast(pl.Utf8)).alias("vm"),
                         pl.from_epoch(pl.col("time").cast(pl.Int64)).alias("time"))
    labels = win.select("window_id", pl.col("perf").clip(1e-3, 1.0))
    return Task("temporal", metrics, labels, windows, target_metric="app_perf")


# -- fingerprint -----------------------------------------------------------------------------
def short_instances(raw: pl.DataFrame, max_offset: int = 8, half: int = 15) -> pl.DataFrame:
    """Add `instance` (an id of the VM instance, unique within vm_sku) to short-lived runs;
    runs no instance explains (end times > TOL_S apart) are dropped."""
    parts = []
    offs = np.arange(-max_offset, max_offset + 1)
    for (_sku,), g in raw.group_by("vm_sku", maintain_order=True):
        files = g.group_by("metric").len().sort(["len", "metric"], descending=[True, False])
        master = g.filter(pl.col("metric") == files["metric"][0])
        n = int(master["vm_id"].max()) + 1
        tm = np.full(n + 2 * max_offset, np.nan)
        tm[master["vm_id"].to_numpy() + max_offset] = master["end_s"].to_numpy()
        for (_m,), h in g.sort("vm_id").group_by("metric", maintain_order=True):
            j = h["vm_id"].to_numpy()
            t = h["end_s"].to_numpy()
            ok = np.abs(tm[np.clip(j, 0, n - 1)[:, None] + max_offset + offs] - t[:, None]) < TOL_S
            cs = np.vstack([np.zeros((1, ok.shape[1])), np.cumsum(ok, 0)])
            r = np.arange(len(j))
            score = (cs[np.minimum(r + half + 1, len(j))] - cs[np.maximum(r - half, 0)]
                     + 0.5 * ok)
            inst = j + offs[np.argmax(score, 1)]
            near = np.abs(tm[np.clip(inst, -max_offset, n + max_offset - 1) + max_offset] - t)
            parts.append(h.with_columns(pl.Series("instance", inst),
                                        pl.Series("_ok", near < TOL_S)))
    return pl.concat(parts).filter("_ok").drop("_ok")


def fingerprint_task(store, trace: str = "azure_vm_noise", max_steps: int = 32,
                     apps_per_instance: int = 2, skus: list[str] | None = None,
                     val_frac: float = 0.1, test_frac: float = 0.2,
                     directions: dict | None = None, max_instances: int | None = None,
                     min_micro: int = 3, until: str | None = None,
                     mark_sku: bool = True, mark_age: bool = True) -> Task:
    """Fingerprint task on short-lived VMs (see module docstring): windows of `max_steps` steps
    (the last max_steps - 1 micro-benchmark runs, then the app step; the default 32 keeps every
    micro-benchmark run of nearly all Azure windows; shorter windows made every model worse:
    docs/results.md#interference). Each instance gives up to
    `apps_per_instance` windows (its last application runs, which have the most micro-
    benchmarks before them); windows with fewer than `min_micro` micro-benchmark runs are
    dropped. `max_instances` keeps the most recent instances per SKU and `until` (ISO date)
    drops later runs (quick runs). `mark_sku` adds a marker metric `sku:<vm_sku>` = 1 at every
    step (values are relative to each SKU's median, so the SKU is otherwise invisible; every
    model gets it). `mark_age` adds `vm_age_h` at the app step (hours since the instance's
    first run began: a burstable VM's CPU credits drain as its benchmarks run). What each
    marker gains: docs/results.md#interference."""
    raw = short_instances(_rows(store, trace, "short", skus, until))
    inst = (raw.group_by("vm_sku", "instance")
            .agg(pl.col("end_s").min().alias("start"),
                 (pl.col("end_s") - pl.col("runtime_s")).min().alias("born"))
            .with_columns(pl.col("start").rank("ordinal").over("vm_sku").alias("_r"),
                          pl.len().over("vm_sku").alias("_n")))
    if max_instances:
        inst = inst.filter(pl.col("_r") > pl.col("_n") - max_instances).with_columns(
            pl.col("start").rank("ordinal").over("vm_sku").alias("_r"),
            pl.len().over("vm_sku").alias("_n"))
    q = pl.col("_r") / pl.col("_n")
    inst = inst.with_columns(
        pl.when(q > 1 - test_frac).then(pl.lit("test"))
        .when(q > 1 - test_frac - val_frac).then(pl.lit("val")).otherwise(pl.lit("train"))
        .alias("split")).drop("_r", "_n")
    raw = raw.join(inst, on=["vm_sku", "instance"])
    rel = _relative(raw, pl.col("split") == "train", directions)
    is_app = _is_app()
    apps = (rel.filter(is_app)
            .select("vm_sku", "instance", "split", "metric", "rel", "end_s", "born",
                    (pl.col("end_s") - pl.col("runtime_s")).alias("begin_s"))
            .sort("end_s").group_by("vm_sku", "instance", maintain_order=True)
            .tail(apps_per_instance)
            .sort("vm_sku", "instance", "end_s").with_row_index("window_id")
            .with_columns(pl.col("window_id").cast(pl.Int64)))
    micro = rel.filter(~pl.col("suite").is_in(APP_SUITES)).select(
        "vm_sku", "instance", "metric", "rel", "end_s")
    before = (apps.select("window_id", "vm_sku", "instance", "begin_s")
              .join(micro, on=["vm_sku", "instance"])
              .filter(pl.col("end_s") <= pl.col("begin_s") + 1.0)
              .with_columns(pl.col("end_s").rank("dense").over("window_id").cast(pl.Int64)
                            .alias("t")))
    counts = before.group_by("window_id").agg(pl.col("t").max().alias("steps"))
    apps = apps.join(counts, on="window_id").filter(pl.col("steps") >= min_micro)
    keep = apps["window_id"].implode()
    # the last max_steps - 1 micro-benchmark runs, then the application step
    before = (before.join(counts, on="window_id")
              .filter(pl.col("t") > pl.col("steps") - (max_steps - 1))
              .with_columns(pl.col("t") - pl.col("steps") + max_steps - 1))
    apps = apps.with_columns(pl.lit(max_steps, dtype=pl.Float64).alias("t"))  # the app step
    metrics = pl.concat([
        before.filter(pl.col("window_id").is_in(keep))
        .select("window_id", pl.col("t").cast(pl.Float64), pl.col("metric").cast(pl.Utf8),
                pl.col("rel").alias("value")),
        apps.select("window_id", "t", ("app:" + pl.col("metric")).alias("metric"),
                    pl.lit(1.0).alias("value")),
        *([apps.select("window_id", "t", pl.lit("vm_age_h").alias("metric"),
                       ((pl.col("begin_s") - pl.col("born")) / 3600).alias("value"))]
          if mark_age else []),
    ])
    if mark_sku:
        metrics = pl.concat([metrics, (
            metrics.select("window_id", "t").unique()
            .join(apps.select("window_id", "vm_sku"), on="window_id")
            .select("window_id", "t", ("sku:" + pl.col("vm_sku")).alias("metric"),
                    pl.lit(1.0).alias("value")))])
    metrics = metrics.with_columns(pl.col("metric").cast(pl.Categorical)).sort("window_id", "t")
    windows = apps.select("window_id", "split", "vm_sku",
                          (pl.col("vm_sku") + "/" + pl.col("instance").cast(pl.Utf8)).alias("vm"),
                          pl.from_epoch(pl.col("end_s").cast(pl.Int64)).alias("time"))
    labels = apps.select("window_id", pl.col("rel").clip(1e-3, 1.0).alias("perf"))
    return Task("fingerprint", metrics, labels, windows)
