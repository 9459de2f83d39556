"""Interference task from the NTUA co-location study (`interference_runs` and
`interference_samples`, adapter `ntua-interference`): one window per run, one label per run.

Window: the run's PCM counters, t = sample index (5 s apart), metric = counter name
(`sys:*` only with `counters="system"`, per-core `coreN:*` too with `"all"`), plus the known
load as constant metrics at every step: `rps` (given requests/s) and `replicas` (the number
in the Test_ID, `<N>replicas`), and with `corunners=True` (default) the co-runner placement
a scheduler knows: `co:cpu`, `co:l3`, `co:membw` = pods of that co-runner family beside the
service (0 for the others and for baseline runs; absent for a `mix` run, whose make-up the
study's Interference_ID does not tell). Runs without counters (`samples = 0`) are left out.

Label: perf = min(1, L0 / L), L = the run's latency (`latency`: avg, p50, p90, p95 or p99),
L0 = "no interference" latency = the median latency of the `Baseline*` runs (family
`baseline`) of the same series at the same replicas and rate. A series without its own
baseline runs at that (replicas, rate): with `pooled_baselines=True` (default) L0 is the
median over the baseline runs of every loaded series at the same replicas string and rate;
the run is left out (counted in `Task.dropped`) when no series has one. With
`pooled_baselines=False` such a series raises InvalidInputError. Baseline runs are labelled
the same way (perf ~ 1, below it when a baseline run is slower than its median).

Split: windows of `test_series` (or of interference names in `test_mixes`) are `test`,
`val_series` are `val`, the rest `train`. `windows` columns: window_id (`series/test_id`),
split, vm_sku (= family, so `Task.groups` breaks results down per family), vm (= series),
time (run order), family, interference, rps, replicas.
"""

from __future__ import annotations

import re

import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.interference.tasks import Task

LATENCIES = ("avg", "p50", "p90", "p95", "p99")
FAMILY_ORDER = ("baseline", "cpu", "l3", "membw", "mix")
CORUNNER_FAMILIES = ("cpu", "l3", "membw")  # -> constant metrics co:<family> (pods)


def replicas_of(test_id: str, replicas: str) -> float:
    """Replica count: N of `<N>replicas` in the Test_ID, else the last integer of the
    Replicas field (`balanced_1` -> 1), else NaN."""
    m = re.search(r"(\d+)replicas", test_id) or re.search(r"(\d+)\D*$", replicas)
    return float(m.group(1)) if m else float("nan")


def colocation_runs(store, traces: list[str] | None = None, latency: str = "avg",
                    pooled_baselines: bool = True) -> pl.DataFrame:
    """Labelled runs: interference_runs columns plus `latency_s`, `baseline_s`, `perf`.
    Runs whose baseline cannot be found have null `perf` (see the module docstring)."""
    if latency not in LATENCIES:
        raise InvalidInputError(f"latency={latency!r}: choose one of {', '.join(LATENCIES)}")
    where = "" if traces is None else "WHERE trace IN (SELECT unnest(?::VARCHAR[]))"
    runs = store.sql(f"SELECT * FROM interference_runs {where} ORDER BY trace, series, test_id",
                     [traces] if traces is not None else None)
    if runs.is_empty():
        raise InvalidInputError(
            "no interference runs in the store" + (f" for traces {traces}" if traces else "")
            + "; ingest the study first: servecast ingest ntua-interference FOLDER")
    runs = runs.with_columns(latency_s=pl.col(f"{latency}_latency_s"))
    base = runs.filter(pl.col("family") == "baseline")
    own = base.group_by("series", "replicas", "rps").agg(
        own_s=pl.col("latency_s").median())
    pooled = base.group_by("replicas", "rps").agg(pooled_s=pl.col("latency_s").median())
    out = runs.join(own, on=["series", "replicas", "rps"], how="left").join(
        pooled, on=["replicas", "rps"], how="left")
    lacking = sorted(set(out.filter(pl.col("own_s").is_null())["series"]))
    if lacking and not pooled_baselines:
        raise InvalidInputError(
            f"series {', '.join(lacking)}: no Baseline runs at some (replicas, rate), so "
            "'no interference' latency is undefined there; ingest its baseline runs or pass "
            "pooled_baselines=True to use other series' baselines at the same load")
    return (out.with_columns(baseline_s=pl.coalesce("own_s", "pooled_s"),
                             baseline_from=pl.when(pl.col("own_s").is_not_null())
                             .then(pl.lit("own")).when(pl.col("pooled_s").is_not_null())
                             .then(pl.lit("pooled")).otherwise(None))
            .with_columns(perf=pl.min_horizontal(pl.lit(1.0),
                                                 pl.col("baseline_s") / pl.col("latency_s")))
            .drop("own_s", "pooled_s"))


def colocation_task(store, traces: list[str] | None = None, latency: str = "avg",
                    counters: str = "system", test_series=(), val_series=(), test_mixes=(),
                    pooled_baselines: bool = True, corunners: bool = True) -> Task:
    """The co-location task (windows, labels, split) of the module docstring."""
    if counters not in ("system", "all"):
        raise InvalidInputError(f"counters={counters!r}: choose 'system' or 'all'")
    runs = colocation_runs(store, traces, latency, pooled_baselines)
    known = set(runs["series"])
    unknown = sorted((set(test_series) | set(val_series)) - known)
    if unknown:
        raise InvalidInputError(f"series {', '.join(unknown)} not in the store (have "
                                f"{', '.join(sorted(known))})")
    usable = runs.filter(pl.col("samples") > 0, pl.col("perf").is_not_null())
    dropped = {"no counters": int((runs["samples"] == 0).sum()),
               "no baseline": int(((runs["samples"] > 0) & runs["perf"].is_null()).sum())}
    if usable.is_empty():
        raise InvalidInputError("no run has both counters and a baseline; see "
                                f"{dropped} and the adapter's handling of missing files")
    windows = usable.with_columns(
        window_id=pl.col("series") + "/" + pl.col("test_id"),
        split=pl.when(pl.col("series").is_in(list(test_series))
                      | pl.col("interference").is_in(list(test_mixes))).then(pl.lit("test"))
        .when(pl.col("series").is_in(list(val_series))).then(pl.lit("val"))
        .otherwise(pl.lit("train")),
        vm_sku=pl.col("family"), vm=pl.col("series"),
        time=pl.int_range(pl.len()),
        replicas_n=pl.struct("test_id", "replicas").map_elements(
            lambda r: replicas_of(r["test_id"], r["replicas"]), return_dtype=pl.Float64))
    prefix = "" if counters == "all" else "AND metric LIKE 'sys:%'"
    where = "" if traces is None else "AND trace IN (SELECT unnest(?::VARCHAR[]))"
    samples = store.sql(
        f"""SELECT series || '/' || test_id AS window_id, sample::DOUBLE AS t, metric, value
            FROM interference_samples WHERE value IS NOT NULL {prefix} {where}""",
        [traces] if traces is not None else None)
    samples = samples.join(windows.select("window_id"), on="window_id", how="semi")
    steps = samples.select("window_id", "t").unique()
    load = steps.join(windows.select("window_id", "rps", "replicas_n", "family", "pods"),
                      on="window_id")
    extra = pl.concat([
        load.select("window_id", "t", metric=pl.lit("rps"), value=pl.col("rps")),
        load.select("window_id", "t", metric=pl.lit("replicas"), value=pl.col("replicas_n")),
        *([] if not corunners else [
            load.filter(pl.col("family") != "mix").select(
                "window_id", "t", metric=pl.lit(f"co:{fam}"),
                value=pl.when(pl.col("family") == fam).then(pl.col("pods")).otherwise(0)
                .cast(pl.Float64))
            for fam in CORUNNER_FAMILIES])])
    metrics = pl.concat([samples, extra.cast(samples.schema)])
    task = Task(name="colocation", metrics=metrics,
                labels=windows.select("window_id", "perf"),
                windows=windows.select("window_id", "split", "vm_sku", "vm", "time", "family",
                                       "interference", "rps", "replicas"))
    task.dropped = dropped
    return task
