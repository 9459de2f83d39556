"""Run-level GBM for the co-location task (`colocation.colocation_task`) and the nested
protocol that picks its variant on training series only.

Features of a run (`run_features`), from its counters (every metric but `rps` / `replicas`):
- `stats`: per counter mean, std, min, max, q10, q90, last value and slope (per sample) over
  the run, plus rps and replicas;
- `base`: per counter the run's mean over the mean of its own series' `Baseline*` runs at the
  same replicas and rate (NaN when the series has none there: LightGBM routes NaN; the
  counters of baseline runs are inputs measured with the service alone, no label is used),
  and the same difference;
- `rate`: per counter the run's mean per request (mean / rps).

Targets (`TARGETS`): `perf` (the label itself) or `log`: y = -log(perf) = log(L / L0), the
log latency ratio, mapped back with perf = exp(-max(y, 0)).

`nested_predictions`: for each outer fold (test = held-out windows), every candidate of
`CANDIDATES` is scored by inner grouped k-fold over the outer training series (no series in
two inner splits); the candidate with the lowest inner MAE is refit on all outer training
runs and predicts the outer test runs. Nothing of the outer test split is seen in selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.interference.tasks import Task

FEATURE_SETS = {"stats": ("stats",), "stats+base": ("stats", "base"),
                "stats+base+rate": ("stats", "base", "rate")}
TARGETS = ("perf", "log")
LOAD = ("rps", "replicas")


@dataclass(frozen=True)
class Candidate:
    """One variant: feature set (key of FEATURE_SETS), target (of TARGETS), boosting
    rounds and seeds averaged (an ensemble of `seeds` boosters with different bagging)."""

    features: str = "stats+base"
    target: str = "log"
    rounds: int = 300
    seeds: int = 1

    @property
    def name(self) -> str:
        return f"{self.features}/{self.target}" + (f"/x{self.seeds}" if self.seeds > 1 else "")


CANDIDATES = tuple(Candidate(f, t) for f in FEATURE_SETS for t in TARGETS)


def run_features(task: Task) -> pl.DataFrame:
    """One row per window of `task`: window_id, then the feature columns of the module
    docstring, prefixed `stats:`, `base:` and `rate:`. Raises InvalidInputError when a
    window has no counter values."""
    m = task.metrics.filter(~pl.col("metric").is_in(LOAD), pl.col("value").is_finite())
    empty = set(task.windows["window_id"]) - set(m["window_id"])
    if empty:
        raise InvalidInputError(f"{len(empty)} window(s) without counter values (first: "
                                f"{sorted(empty)[0]}); drop runs without PCM samples")
    g = m.sort("t").group_by("window_id", "metric")
    tc = pl.col("t") - pl.col("t").mean()
    s = g.agg(mean=pl.col("value").mean(), std=pl.col("value").std().fill_null(0.0),
              min=pl.col("value").min(), max=pl.col("value").max(),
              q10=pl.col("value").quantile(0.1), q90=pl.col("value").quantile(0.9),
              last=pl.col("value").last(),
              slope=((tc * pl.col("value")).sum() / (tc * tc).sum()).fill_nan(0.0))
    w = task.windows.select("window_id", "vm", "family", "rps", "replicas")
    s = s.join(w, on="window_id")
    ref = (s.filter(pl.col("family") == "baseline")
           .group_by("vm", "replicas", "rps", "metric").agg(ref=pl.col("mean").mean()))
    s = s.join(ref, on=["vm", "replicas", "rps", "metric"], how="left").with_columns(
        ratio=pl.col("mean") / pl.col("ref"), diff=pl.col("mean") - pl.col("ref"),
        per_req=pl.col("mean") / pl.col("rps"))
    stat_cols = ["mean", "std", "min", "max", "q10", "q90", "last", "slope"]
    parts = {"stats": stat_cols, "base": ["ratio", "diff"], "rate": ["per_req"]}
    wide = []
    for kind, cols in parts.items():
        p = s.pivot(on="metric", index="window_id", values=cols)
        wide.append(p.rename({c: f"{kind}:{c}" for c in p.columns if c != "window_id"}))
    out = task.windows.select("window_id", pl.col("rps").alias("stats:rps"),
                              pl.col("replicas").str.extract(r"(\d+)\D*$").cast(pl.Float64)
                              .alias("stats:replicas"))
    for p in wide:
        out = out.join(p, on="window_id", how="left")
    return out


def columns_of(frame: pl.DataFrame, features: str) -> list[str]:
    """The feature columns of `frame` in feature set `features`."""
    kinds = FEATURE_SETS[features]
    return [c for c in frame.columns if c.split(":", 1)[0] in kinds]


def to_target(perf: np.ndarray, target: str) -> np.ndarray:
    return -np.log(np.clip(perf, 1e-6, 1.0)) if target == "log" else perf


def from_target(y: np.ndarray, target: str) -> np.ndarray:
    return np.exp(-np.maximum(y, 0.0)) if target == "log" else np.clip(y, 0.0, 1.0)


def fit_predict(x: np.ndarray, perf: np.ndarray, x_new: np.ndarray, cand: Candidate,
                quantile: float | None = None) -> np.ndarray:
    """Fit `cand` on (x, perf) and predict perf of x_new (mean over its seeds). With
    `quantile` q the boosters fit the q-quantile of perf instead of the median (pinball
    loss; on the log target, quantile 1 - q of y maps to quantile q of perf)."""
    import lightgbm as lgb

    y = to_target(perf, cand.target)
    params = dict(learning_rate=0.05, num_leaves=15, min_data_in_leaf=15,
                  bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.5,
                  objective="l1", verbose=-1, num_threads=1)
    if quantile is not None:
        params.update(objective="quantile",
                      alpha=1 - quantile if cand.target == "log" else quantile)
    preds = [lgb.train({**params, "seed": seed}, lgb.Dataset(x, y), cand.rounds).predict(x_new)
             for seed in range(cand.seeds)]
    return from_target(np.mean(preds, axis=0), cand.target)


def series_folds(series: np.ndarray, k: int) -> list[np.ndarray]:
    """Grouped k-fold: boolean masks of the held-out rows, series sorted and dealt round-robin
    to min(k, number of series) folds (no series in two folds)."""
    names = sorted(set(series.tolist()))
    if len(names) < 2:
        raise InvalidInputError(f"nested selection needs >= 2 training series, got {names}")
    k = min(k, len(names))
    return [np.isin(series, names[i::k]) for i in range(k)]


def inner_errors(x: pl.DataFrame, perf: np.ndarray, series: np.ndarray, candidates,
                 k: int = 3) -> dict[str, np.ndarray]:
    """Out-of-fold |error| of perf (0-1) per training run of every candidate, by inner
    grouped k-fold over `series` (training runs only)."""
    out = {}
    for cand in candidates:
        cols = columns_of(x, cand.features)
        xa = x.select(cols).to_numpy()
        err = np.empty(len(perf))
        for held in series_folds(series, k):
            err[held] = np.abs(fit_predict(xa[~held], perf[~held], xa[held], cand)
                               - perf[held])
        out[cand.name] = err
    return out


def nested_predictions(task: Task, features: pl.DataFrame, candidates=CANDIDATES,
                       k: int = 3, coverage: float = 0.9) -> tuple[pl.DataFrame, dict]:
    """Nested selection on `task`'s split (train + val = outer training, test = outer test):
    ([window_id, perf, pred, half], {"chosen": name, "inner": {name: MAE pp}}).

    `half` is a series-disjoint conformal half-width (perf units): the `coverage` quantile
    of the chosen candidate's inner out-of-fold |error| (every training run is scored by a
    booster that never saw its series), so pred +- half targets `coverage` of held-out runs."""
    w = task.windows.join(task.labels, on="window_id").join(features, on="window_id")
    train, test = w.filter(pl.col("split") != "test"), w.filter(pl.col("split") == "test")
    if test.is_empty() or train.is_empty():
        raise InvalidInputError("nested selection needs training and test windows")
    perf = train["perf"].to_numpy()
    errs = inner_errors(train, perf, train["vm"].to_numpy(), candidates, k)
    inner = {name: 100 * float(e.mean()) for name, e in errs.items()}
    best = min(candidates, key=lambda c: inner[c.name])
    half = float(np.quantile(errs[best.name], coverage))
    cols = columns_of(w, best.features)
    pred = fit_predict(train.select(cols).to_numpy(), perf, test.select(cols).to_numpy(), best)
    return (test.select("window_id", "perf").with_columns(pred=pl.Series(pred),
                                                          half=pl.lit(half)),
            {"chosen": best.name, "inner": inner})
