"""Interference on the NTUA co-location study: leave-one-series-out and unseen-interference
folds, MAE (pp of perf) of every model pooled over the held-out windows, overall and per
family (baseline, cpu, l3, membw). Usage:

    .venv/bin/python benchmarks/interference_ntua.py [--db ntua.duckdb] [--fast]
        [--models gbm,mean,temporal,dual,across] [--protocol series|mix|both]
        [--max-steps 40] [--train-steps 0] [--nested] [--inner-k 3]
        [--n-seeds 0] [--pre-steps 300] [--save FILE] [--save-models DIR]

`--folds A,B` runs only the named folds of each protocol (e.g. to split a run over
processes and `--join` their `--save` files). `--train-steps N` gives the networks a
budget of N optimizer steps instead of epochs (`InterferencePredictor.epochs_for`) of
`--batch-size` rows; `--n-seeds N` overrides the preset's seed ensemble. Models
`temporal-pre` and `gbm-embed` are the small-data options of `pretrain` (cross-run
pretraining of the temporal encoder on the fold's train + val windows, `--pre-steps`
optimizer steps, then the temporal network's fine-tuning; GBM on window statistics plus
the pretrained encoder's window embedding). `--save FILE` writes every
per-window prediction (parquet), rewritten (through a temporary file and a rename) as each
model of each fold finishes, so a run that stops keeps every finished model's rows; at the
end it also holds the joined rows and the ensembles. `--save-models DIR` saves every fitted
model as it finishes, in DIR/<protocol>/<fold>/<model>/ (`InterferencePredictor.load`, or
`ColocationGBM.load` for gbm-nested; gbm-embed has no saved form and is refused).
`--join FILE` (repeatable) adds such a file's rows (same folds) to this run's. Whenever
the predictions hold `gbm-nested` and a network NET (run here or joined), model
`gbm-nested+NET` is the mean of the two models' predictions on the same held-out runs
(its interval half-width: the mean of the two).

`--nested` adds model `gbm-nested`, the shipped co-location default (`colocation_gbm.
ColocationGBM`, 3 seeds) fitted in every outer fold on its training runs: the run-level
GBM variants (`colocation_gbm.CANDIDATES`) chosen by the inner folds of those runs (series
folds for co-runner settings seen in training, setting folds for unseen ones) are refit on
them and predict the fold's test runs; each run's interval is the conformal one of the
variant that predicted it. The unseen-settings variant may carry the temporal network as
an equal-weight member (`colocation_net`), when the same inner setting folds favour the
mean; it then shows as `<variant>+temporal`. The variants chosen per fold, every variant's
inner MAE and the fold's wall and CPU seconds are printed.

Ingests ../shared/datasets/vm/ntua_interference into --db if the trace is missing.

Folds (`folds`): `series`: each series with counters in turn is the test split, the next
series (alphabetically, cyclic) validates, the rest train. `mix` (unseen interference):
fold k = 1..4 tests the runs of three co-runner settings in every series, cpu with k pods,
l3 with k+1 and membw with k+2 (mod 4, 1-4): each setting is held out exactly once and
never seen in training, while its family's other pod counts are; one series validates.
No run is ever in two splits of one fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import polars as pl

from servecast.config import data_dir
from servecast.predictors import metrics
from servecast.predictors.interference import colocation_gbm as cg
from servecast.predictors.interference import evaluate as ev
from servecast.predictors.interference import pretrain
from servecast.predictors.interference.colocation import colocation_task
from servecast.predictors.interference.runtime import NEURAL
from servecast.predictors.interference.settings import PRESET
from servecast.predictors.interference.tasks import Task
from servecast.store import Store

TRACE = "ntua_interference"
MIX_FAMILIES = ("cpu", "l3", "membw")
#: split-conformal interval: pred +- the COVERAGE quantile of |error| on the fold's val series
COVERAGE = 0.9


def ntua_store(db: str) -> Store:
    store = Store(db)
    if TRACE not in set(store.sql("SELECT trace FROM traces")["trace"]):
        store.ingest("ntua-interference", [data_dir() / "vm/ntua_interference"], trace=TRACE)
    return store


def folds(task: Task, protocol: str, only=None) -> list[tuple[str, Task]]:
    """(name, task re-split) per fold of `protocol` ('series' or 'mix'); with `only` (fold
    names), just those."""
    w = task.windows
    series = sorted(set(w["vm"]))
    out = []
    if protocol == "series":
        for i, s in enumerate(series):
            val = series[(i + 1) % len(series)]
            split = (pl.when(pl.col("vm") == s).then(pl.lit("test"))
                     .when(pl.col("vm") == val).then(pl.lit("val")).otherwise(pl.lit("train")))
            out.append((s, _resplit(task, split)))
    else:
        w = w.with_columns(pods=w["interference"].str.extract(r"^(\d+)_").cast(pl.Int64))
        for k in range(1, 5):
            held = [(fam, (k + shift - 1) % 4 + 1) for shift, fam in enumerate(MIX_FAMILIES)]
            test = pl.any_horizontal([(pl.col("family") == f) & (pl.col("pods") == n)
                                      for f, n in held])
            val = series[k % len(series)]
            split = (pl.when(test).then(pl.lit("test"))
                     .when(pl.col("vm") == val).then(pl.lit("val")).otherwise(pl.lit("train")))
            t = Task(task.name, task.metrics, task.labels,
                     w.with_columns(split=split).drop("pods"), task.target_metric)
            out.append((" ".join(f"{f}{n}" for f, n in held), t))
    return [(name, t) for name, t in out if only is None or name in only]


def _resplit(task: Task, split: pl.Expr) -> Task:
    return Task(task.name, task.metrics, task.labels, task.windows.with_columns(split=split),
                task.target_metric)


class Saver:
    """Keeps what finished as it finishes: `add(rows, model, fold_dir)` appends a fold's
    rows of one model and rewrites `file` (parquet; None: kept in memory only) with every
    row so far, and with `models` (a folder) saves the fitted model in
    models/<fold_dir>/. `write(frame)` replaces the file's contents; each write goes
    through `<file>.tmp` and a rename, so the file is never half-written."""

    def __init__(self, file: str | Path | None = None, models: str | Path | None = None):
        self.file = None if file is None else Path(file)
        self.models = None if models is None else Path(models)
        self.rows: list[pl.DataFrame] = []

    def add(self, rows: pl.DataFrame, model=None, fold_dir: str = "") -> None:
        self.rows.append(rows)
        if self.file is not None:
            self.write(pl.concat(self.rows, how="diagonal_relaxed"))
        if self.models is not None and model is not None:
            model.save(self.models / fold_dir)

    def model_dir(self, fold_dir: str) -> Path | None:
        return None if self.models is None else self.models / fold_dir

    def write(self, frame: pl.DataFrame) -> None:
        if self.file is None:
            return
        tmp = self.file.with_name(self.file.name + ".tmp")
        frame.write_parquet(tmp)
        os.replace(tmp, self.file)


def _fold_dir(protocol: str, fold: str, model: str) -> str:
    return f"{protocol}/{fold.replace(' ', '_')}/{model}"


def run(task: Task, protocol: str, models: list[str], settings: dict, max_steps: int,
        log=print, only=None, pre_steps: int = pretrain.PRE_STEPS,
        saver: Saver | None = None) -> pl.DataFrame:
    """Per-window predictions of every model in every fold of `protocol`:
    [protocol, fold, model, window_id, family, perf, pred]; each (fold, model) goes to
    `saver` as soon as it is done, before its line is logged."""
    rows = []
    for name, t in folds(task, protocol, only):
        tm, tl = t.part("test")
        for m in models:
            t0, c0 = time.perf_counter(), time.process_time()
            if m in pretrain.MODELS:
                p = pretrain.train_model(t, m, settings, max_steps, pre_steps)
            else:
                p = ev.train_model(t, m, settings, max_steps=max_steps)
            pred = p.predict(tm).rename({"perf": "pred"})
            vm, vl = t.part("val")
            v = vl.join(p.predict(vm).rename({"perf": "pred"}), on="window_id")
            half = float((v["pred"] - v["perf"]).abs().quantile(COVERAGE))
            j = tl.join(pred, on="window_id").join(
                t.windows.select("window_id", "family"), on="window_id").with_columns(
                half=pl.lit(half))
            mae_pp = 100 * metrics.mae(j["pred"].to_numpy(), j["perf"].to_numpy())
            rows.append(j.with_columns(protocol=pl.lit(protocol), fold=pl.lit(name),
                                       model=pl.lit(m)))
            if saver is not None:
                saver.add(rows[-1], p, _fold_dir(protocol, name, m))
            log(f"{protocol} {name:18s} {m:9s} MAE {mae_pp:6.2f} pp  n={j.height}  "
                f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")
    return pl.concat(rows)


def run_nested(task: Task, protocol: str, k: int = 3, log=print, only=None,
               saver: Saver | None = None) -> pl.DataFrame:
    """`run`'s rows for model `gbm-nested` (nested selection in every fold of `protocol`),
    to `saver` as each fold finishes."""
    rows = []
    for name, t in folds(task, protocol, only):
        t0, c0 = time.perf_counter(), time.process_time()
        where = None if saver is None else saver.model_dir(_fold_dir(protocol, name,
                                                                     "gbm-nested"))
        j, info = cg.nested_predictions(t, k=k, coverage=COVERAGE, save_to=where)
        j = j.join(t.windows.select("window_id", "family"), on="window_id")
        inner = "; ".join(f"{p}: " + ", ".join(f"{c} {v:.2f}" for c, v in sorted(
            s.items(), key=lambda kv: kv[1])) for p, s in info["inner"].items())
        rows.append(j.with_columns(protocol=pl.lit(protocol), fold=pl.lit(name),
                                   model=pl.lit("gbm-nested")))
        if saver is not None:
            saver.add(rows[-1])
        log(f"{protocol} {name:18s} gbm-nested MAE "
            f"{100 * metrics.mae(j['pred'].to_numpy(), j['perf'].to_numpy()):6.2f} pp  "
            f"n={j.height}  chose {info['chosen']}, unseen settings {info['unseen']} "
            f"(inner: {inner})  {time.perf_counter() - t0:.0f} s wall, "
            f"{time.process_time() - c0:.0f} s CPU")
    return pl.concat(rows)


def summary(pred: pl.DataFrame) -> pl.DataFrame:
    """MAE (pp) per protocol x model, pooled over folds: `all` and one column per family;
    `half_pp` the mean half-width of the split-conformal interval (pp), `covered` the share
    of held-out windows inside it (target COVERAGE)."""
    err = pred.with_columns(ae=100 * (pl.col("pred") - pl.col("perf")).abs())
    overall = err.group_by("protocol", "model").agg(
        all=pl.col("ae").mean(), n=pl.len(), half_pp=100 * pl.col("half").mean(),
        covered=(pl.col("ae") <= 100 * pl.col("half")).mean())
    fam = err.group_by("protocol", "model", "family").agg(pl.col("ae").mean()).pivot(
        on="family", index=["protocol", "model"], values="ae")
    return overall.join(fam, on=["protocol", "model"]).sort("protocol", "all")


def per_fold(pred: pl.DataFrame) -> pl.DataFrame:
    """MAE (pp) per protocol x fold (the held-out series or settings), one column per
    model."""
    err = pred.with_columns(ae=100 * (pl.col("pred") - pl.col("perf")).abs())
    return (err.group_by("protocol", "fold", "model").agg(pl.col("ae").mean())
            .pivot(on="model", index=["protocol", "fold"], values="ae").sort("protocol", "fold"))


def ensembles(pred: pl.DataFrame, nets: list[str], base: str = "gbm-nested") -> pl.DataFrame:
    """Rows of model `base+NET` for every network NET in `nets` that `pred` holds: the mean
    of the two models' pred and half on the same (protocol, fold, window)."""
    key = ["protocol", "fold", "window_id"]
    g = pred.filter(pl.col("model") == base).select(*key, "family", "perf", gp="pred", gh="half")
    out = []
    for net in nets:
        n = pred.filter(pl.col("model") == net).select(*key, np="pred", nh="half")
        if n.height:
            out.append(g.join(n, on=key).select(
                *key, "family", "perf", pred=(pl.col("gp") + pl.col("np")) / 2,
                half=(pl.col("gh") + pl.col("nh")) / 2, model=pl.lit(f"{base}+{net}")))
    return pl.concat(out) if out else pred.clear()


def check_args(args: argparse.Namespace, models: list[str]) -> None:
    """Exit 2 (message on stderr) before any training on what would fail after it: an
    unknown model, a model --save-models cannot save, a --save folder or --join file that
    is not there."""
    from servecast.predictors.interference.predictor import MODELS

    errors = [f"--models: unknown model {m!r}; one of "
              f"{', '.join((*MODELS, *pretrain.MODELS))}"
              for m in models if m not in MODELS + pretrain.MODELS]
    if args.save_models and "gbm-embed" in models:
        errors.append("--save-models: gbm-embed has no saved form (a research option of "
                      "predictors/interference/pretrain.py); leave it out of --models or "
                      "drop --save-models")
    if args.save and not Path(args.save).resolve().parent.is_dir():
        errors.append(f"--save {args.save}: no folder {Path(args.save).resolve().parent}; "
                      "create it first")
    errors += [f"--join {f}: no such file" for f in args.join if not Path(f).is_file()]
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="ntua.duckdb")
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--models", default="gbm,mean,temporal,dual")
    ap.add_argument("--protocol", default="both", choices=["series", "mix", "both"])
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=0, help="0: the preset's")
    ap.add_argument("--save", default=None, help="parquet file of every prediction, "
                    "rewritten as each model finishes")
    ap.add_argument("--save-models", default=None, help="folder: every fitted model, saved "
                    "as it finishes")
    ap.add_argument("--join", action="append", default=[])
    ap.add_argument("--folds", default=None, help="comma-separated fold names (default: all)")
    ap.add_argument("--counters", default="system", choices=["system", "all"])
    ap.add_argument("--nested", action="store_true")
    ap.add_argument("--inner-k", type=int, default=3)
    ap.add_argument("--n-seeds", type=int, default=0, help="0: the preset's")
    ap.add_argument("--pre-steps", type=int, default=pretrain.PRE_STEPS)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    check_args(args, models)
    joined = [pl.read_parquet(f) for f in args.join]  # before --save may overwrite one
    saver = Saver(args.save, args.save_models)
    store = ntua_store(args.db)
    task = colocation_task(store, traces=[TRACE], counters=args.counters)
    print(f"{task.windows.height} windows, {task.windows['vm'].n_unique()} series, "
          f"left out {task.dropped}")
    settings = PRESET.pick(args.fast)
    settings = dataclasses.replace(settings, train_steps=args.train_steps,
                                   batch_size=args.batch_size or settings.batch_size,
                                   n_seeds=args.n_seeds or settings.n_seeds)
    protocols = ["series", "mix"] if args.protocol == "both" else [args.protocol]
    only = None if args.folds is None else set(args.folds.split(","))
    parts = [run(task, p, models, settings, args.max_steps, only=only,
                 pre_steps=args.pre_steps, saver=saver)
             for p in protocols if models]
    if args.nested:
        parts += [run_nested(task, p, args.inner_k, only=only, saver=saver)
                  for p in protocols]
    pred = pl.concat(parts + joined, how="diagonal_relaxed")
    nets = [m for m in (*NEURAL, *pretrain.MODELS) if m in set(pred["model"])]
    pred = pl.concat([pred, ensembles(pred, nets)], how="diagonal_relaxed")
    saver.write(pred)
    pl.Config.set_tbl_rows(40)
    pl.Config.set_tbl_cols(16)
    pl.Config.set_tbl_width_chars(220)
    pl.Config.set_float_precision(2)
    print(summary(pred))
    print(per_fold(pred))


if __name__ == "__main__":
    main()
