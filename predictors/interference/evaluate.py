"""Train and compare the interference models on a task: the benchmark, the CLI and the demo
all call `compare`. Settings: `settings.PRESET` (full: the benchmark; fast: demo and tests)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from servecast.predictors.interference.predictor import InterferencePredictor
from servecast.predictors.interference.settings import PRESET, TrainSettings
from servecast.predictors.interference.tasks import Task

MODEL_ORDER = ("dual", "temporal", "gbm", "last", "moving_average", "mean")
# `refit=True` (pick epochs / trees on val, retrain on train + val with val x recent_weight)
# was measured and left off (it did not help consistently: docs/results.md#interference).
#: CloudFormer (2025) reports 7.8 % MAE of normalized performance on its own data
CLOUDFORMER_MAE_PP = 7.8


#: the model `servecast train interference` fits when --model is not given, per task name:
#: on the co-location task the run-level GBM with baseline-ratio features
#: (`colocation_gbm.ColocationGBM`, "gbm-baseline": it won the nested series protocol of
#: benchmarks/interference_ntua.py --nested: docs/results.md#co-location-interference-ntua-study),
#: the dual-branch transformer on the Azure tasks (docs/results.md#interference)
DEFAULT_MODELS = {"colocation": "gbm-baseline"}


def default_model(task_name: str) -> str:
    """The default model of a task (`DEFAULT_MODELS`, else "dual")."""
    return DEFAULT_MODELS.get(task_name, "dual")


def train_model(task: Task, model: str, settings: TrainSettings | dict | None = None,
                max_steps: int | None = None, **kw) -> InterferencePredictor:
    """Fit `model` on the task's train split (validated on its val split) with `settings`
    (default: the full preset; a dict may add other `InterferencePredictor` parameters)."""
    cfg = as_dict(settings)
    cfg.update(kw)
    if max_steps is None:
        max_steps = int(task.metrics.group_by("window_id").agg(pl.col("t").n_unique())["t"]
                        .max())
    p = InterferencePredictor(model=model, max_steps=max_steps, target_metric=task.target_metric,
                              **cfg)
    tm, tl = task.part("train")
    vm, vl = task.part("val")
    if vl.height:  # one metrics frame; the labels mark the validation windows
        tm = pl.concat([tm, vm])
        tl = pl.concat([tl.with_columns(validation=pl.lit(False)),
                        vl.with_columns(validation=pl.lit(True))])
    p.fit(tm, tl)
    p.card.update({"task": task.name, "default_model": default_model(task.name),
                   "split": {**p.card.get("split", {}), "rule": _split_rule(task)}})
    return p


def as_dict(settings: TrainSettings | dict | None) -> dict:
    """Settings as `InterferencePredictor` keyword arguments (None: the full preset)."""
    if settings is None:
        settings = PRESET.full
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)


def _split_rule(task: Task) -> str:
    if task.name == "temporal":
        return ("per SKU: test = held-out long-lived VM after the time cutoff; train/val = "
                "the other VMs before it (val = the last span before the cutoff)")
    if task.name == "fingerprint":
        return "short-lived VM instances by start time: train < val < test (no shared instance)"
    if task.name == "colocation":
        held = sorted(set(task.windows.filter(pl.col("split") == "test")["vm"]))
        val = sorted(set(task.windows.filter(pl.col("split") == "val")["vm"]))
        return (f"by experiment series: test = {', '.join(held)}, val = {', '.join(val)}, "
                "train = the rest (no run in two splits)")
    return "labels order: the last val_frac windows validate"


def compare(task: Task, models=MODEL_ORDER, settings: TrainSettings | dict | None = None,
            out: str | Path | None = None, log: Callable[[str], None] = print) -> pl.DataFrame:
    """Train every model on `task`, evaluate on its test split. Returns one row per model x
    group (`all` and each SKU): model, group, n, mae_pp, rmse_pp, bias_pp, fit_s (wall),
    cpu_s (CPU seconds of this process: training threads included). With
    `out`, each model is saved under out/<task>/<model>/."""
    tm, tl = task.part("test")
    groups = task.groups("test")
    rows = []
    for name in models:
        t0, c0 = time.perf_counter(), time.process_time()
        p = train_model(task, name, settings)
        fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        res = p.evaluate(tm, tl.join(groups.select("window_id", "group"), on="window_id",
                                     how="left", maintain_order="left"))
        p.card["test"] = res
        if out is not None:
            p.save(Path(out) / task.name / name)
        for g, r in [("all", res), *sorted(res["by_group"].items())]:
            rows.append(dict(model=name, group=g, n=r["n"], mae_pp=r["mae_pp"],
                             rmse_pp=100 * r["rmse"], bias_pp=100 * r["bias"], fit_s=fit_s,
                             cpu_s=cpu_s))
        per = ", ".join(f"{g} {r['mae_pp']:.2f}" for g, r in sorted(res["by_group"].items()))
        log(f"{task.name}: {name:15s} test MAE {res['mae_pp']:.2f} pp ({per})  "
            f"fit {fit_s:.0f} s wall, {cpu_s:.0f} s CPU")
    return pl.DataFrame(rows)


def gain(table: pl.DataFrame, group: str = "all", exclude: tuple[str, ...] = ()) -> dict:
    """Dual-branch MAE vs the best baseline in `group` (models in `exclude` left out, e.g.
    the single-branch ablation "temporal"): {dual, best_baseline, best, gain} where
    gain = 1 - dual / best (>= 0.15 is the acceptance bar)."""
    t = table.filter(pl.col("group") == group)
    dual = t.filter(pl.col("model") == "dual")["mae_pp"][0]
    base = t.filter((pl.col("model") != "dual") & ~pl.col("model").is_in(exclude)) \
        .sort("mae_pp")
    best, name = base["mae_pp"][0], base["model"][0]
    return {"dual": dual, "best_baseline": name, "best": best, "gain": 1 - dual / best}


def neighbour_floor(task: Task, split: str = "test") -> pl.DataFrame:
    """How predictable a task's label is from the same VM's neighbouring labels, the LATER
    ones included (no predictor has those: a floor, not a baseline). Windows of one `vm` in
    time order; every reference is scored on the windows with two labels on each side.
    Returns one row per reference x group (`all` and each SKU): reference, group, n, mae_pp."""
    w = (task.windows.filter(pl.col("split") == split).join(task.labels, on="window_id")
         .sort("vm", "time", "window_id"))
    near = {f"{side}{k}": pl.col("perf").shift(k if side == "prev" else -k).over("vm")
            for side in ("prev", "next") for k in (1, 2)}
    w = w.with_columns(**near).drop_nulls(list(near))
    refs = {
        "previous label": pl.col("prev1"),
        "mean of previous and next label": (pl.col("prev1") + pl.col("next1")) / 2,
        "median of 2 previous and 2 next labels": pl.concat_list(*near).list.median(),
    }
    err = w.select(pl.col("vm_sku").cast(pl.Utf8).alias("group"),
                   *[(100 * (e - pl.col("perf")).abs()).alias(r) for r, e in refs.items()])
    return (pl.concat([err.with_columns(group=pl.lit("all")), err])
            .group_by("group", maintain_order=True)
            .agg(pl.len().cast(pl.Int64).alias("n"), *[pl.col(r).mean() for r in refs])
            .unpivot(list(refs), index=["group", "n"], variable_name="reference",
                     value_name="mae_pp")
            .select("reference", "group", "n", "mae_pp"))


def metrics_per_step(task: Task, markers: tuple[str, ...] = ("sku:", "app:", "vm_age_h")
                     ) -> pl.DataFrame:
    """How many measured metrics share a time step of a window (metrics whose name starts
    with one of `markers` left out): [metrics, steps, share], the metric-interaction branch's
    material."""
    m = task.metrics.with_columns(pl.col("metric").cast(pl.Utf8))
    real = m.filter(~pl.any_horizontal(pl.col("metric").str.starts_with(p) for p in markers))
    k = real.group_by("window_id", "t").agg(pl.col("metric").n_unique().alias("metrics"))
    return (k.group_by("metrics").agg(pl.len().alias("steps")).sort("metrics")
            .with_columns((pl.col("steps") / pl.col("steps").sum()).alias("share")))
