"""Run-level GBM for the co-location task (`colocation.colocation_task`), the nested
protocol that picks its variant on training series only, and the saved model
(`ColocationGBM`, the co-location default: `params["model"] == "gbm-baseline"`).

Features: `colocation_runtime` (per-counter statistics, ratios to the service's own
baseline counters at the same replicas and rate, counters per request). `with_references`
adds those baseline counters to a task's windows: per counter, the mean over the same
series' `Baseline*` runs at the same replicas and rate (counters measured with the service
alone; no label is used). A series without its own baseline runs at that load gets no
`base:*` metric, hence NaN ratio features, which LightGBM routes (documented handling).

Targets (`TARGETS`): `perf` (the label itself) or `log`: y = -log(perf) = log(L / L0), the
log latency ratio, mapped back with perf = exp(-max(y, 0)). Feature sets with `co` add the
co-runner pods (`colocation_runtime.CORUNNERS`); a `monotone` candidate constrains perf to
fall (never rise) as any of them grows.

`nested_predictions`: for each outer fold (test = held-out windows), every candidate of
`CANDIDATES` is scored by inner grouped k-fold over the outer training series (no series in
two inner splits); the candidate with the lowest inner MAE is refit on all outer training
runs and predicts the outer test runs. Nothing of the outer test split is seen in selection.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.base import SavedModel
from servecast.predictors.interference.colocation_runtime import (
    BASE,
    CORUNNERS,
    FEATURE_SETS,
    LOAD,
    counters_of,
    feature_names,
    from_target,
    to_target,
    uses_corunners,
    window_features,
)
from servecast.predictors.interference.tasks import Task
from servecast.predictors.interference.windows import long_columns

TARGETS = ("perf", "log")
__all__ = ["CANDIDATES", "Candidate", "ColocationGBM", "from_target", "nested_predictions",
           "run_features", "to_target", "with_references"]


@dataclass(frozen=True)
class Candidate:
    """One variant: feature set (key of FEATURE_SETS), target (of TARGETS), boosting
    rounds, seeds averaged (an ensemble of `seeds` boosters with different bagging) and
    `monotone`: perf non-increasing in every co-runner pod count (`co:*`; LightGBM allows
    monotone constraints with the Huber loss, not L1, so such a variant boosts Huber)."""

    features: str = "stats+base"
    target: str = "log"
    rounds: int = 300
    seeds: int = 1
    monotone: bool = False

    @property
    def name(self) -> str:
        return (f"{self.features}/{self.target}" + ("/mono" if self.monotone else "")
                + (f"/x{self.seeds}" if self.seeds > 1 else ""))


#: the variants the inner protocol chooses from; the set itself was narrowed on inner-fold
#: MAE only (docs/results.md#co-runner-aware-gbm-and-the-networks-issue-26-h-ntua3)
CANDIDATES = (Candidate("stats+base"), Candidate("stats+base+rate"),
              Candidate("stats+base+co", monotone=True))


def with_references(task: Task) -> pl.DataFrame:
    """`task.metrics` plus, per window and counter c, the constant metric `base:c` (module
    docstring). Raises InvalidInputError when a window has no counter values."""
    m = task.metrics.filter(~pl.col("metric").is_in(LOAD + CORUNNERS), pl.col("value").is_finite())
    empty = set(task.windows["window_id"]) - set(m["window_id"])
    if empty:
        raise InvalidInputError(f"{len(empty)} window(s) without counter values (first: "
                                f"{sorted(empty)[0]}); drop runs without PCM samples")
    cols = long_columns(task.metrics)
    counters = counters_of(cols)
    ids, x = window_features(cols, counters)  # numpy: the same sums on every call
    mean = dict(zip(ids, x[:, [feature_names(counters).index(f"stats:mean_{c}")
                               for c in counters]], strict=True))
    w = task.windows.select("window_id", "vm", "family", "rps", "replicas").sort("window_id")
    key = w.select(pl.concat_str("vm", "replicas", pl.col("rps").cast(pl.Utf8),
                                 separator="|"))["vm"].to_list()
    groups: dict[str, list] = {}
    for k, wid, fam in zip(key, w["window_id"], w["family"], strict=True):
        if fam == "baseline" and wid in mean:
            groups.setdefault(k, []).append(mean[wid])
    ref = {k: np.nanmean(np.stack(v), axis=0) for k, v in groups.items()}
    rows = [(wid, BASE + c, float(v)) for k, wid in zip(key, w["window_id"], strict=True)
            if k in ref for c, v in zip(counters, ref[k], strict=True) if np.isfinite(v)]
    base = pl.DataFrame(rows, schema=["window_id", "metric", "value"], orient="row")
    base = base.select("window_id", t=pl.lit(0.0), metric="metric", value="value")
    return pl.concat([task.metrics, base.cast(task.metrics.schema)])


def run_features(task: Task, counters: list[str] | None = None) -> pl.DataFrame:
    """One row per window of `task`: window_id, then `colocation_runtime.feature_names`."""
    cols = long_columns(with_references(task))
    counters = counters_of(cols) if counters is None else counters
    ids, x = window_features(cols, counters)
    return pl.DataFrame(x, schema=feature_names(counters), orient="row").insert_column(
        0, pl.Series("window_id", ids))


def columns_of(frame: pl.DataFrame, features: str) -> list[str]:
    """The feature columns of `frame` in feature set `features`."""
    kinds = FEATURE_SETS[features]
    return [c for c in frame.columns if c.split(":", 1)[0] in kinds]


def fit_boosters(x: np.ndarray, perf: np.ndarray, cand: Candidate,
                 columns: list[str] | None = None) -> list:
    """`cand.seeds` LightGBM boosters (L1 loss, i.e. the conditional median of the target;
    Huber with delta 0.1 and the co-runner constraints of `columns` when `cand.monotone`)
    fitted on (x, perf) with `cand.rounds` rounds."""
    import lightgbm as lgb

    params = dict(learning_rate=0.05, num_leaves=15, min_data_in_leaf=15,
                  bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.5,
                  objective="l1", verbose=-1, num_threads=1)
    if cand.monotone:  # the target grows (log) or perf falls with more co-runner pods
        sign = 1 if cand.target == "log" else -1
        params.update(objective="huber", alpha=0.1, monotone_constraints=[
            sign if c in CORUNNERS else 0 for c in columns or []])
    y = to_target(perf, cand.target)
    return [lgb.train({**params, "seed": seed}, lgb.Dataset(x, y), cand.rounds)
            for seed in range(cand.seeds)]


def fit_predict(x: np.ndarray, perf: np.ndarray, x_new: np.ndarray, cand: Candidate,
                columns: list[str] | None = None) -> np.ndarray:
    """Fit `cand` on (x, perf) (feature names `columns`) and predict perf of x_new (mean
    over its seeds)."""
    boosters = fit_boosters(x, perf, cand, columns)
    return from_target(np.mean([b.predict(x_new) for b in boosters], axis=0), cand.target)


def series_folds(series: np.ndarray, k: int) -> list[np.ndarray]:
    """Grouped k-fold: boolean masks of the held-out rows, series sorted and dealt round-robin
    to min(k, number of series) folds (no series in two folds)."""
    names = sorted(set(series.tolist()))
    if len(names) < 2:
        raise InvalidInputError(f"nested selection needs >= 2 training series, got {names}")
    k = min(k, len(names))
    return [np.isin(series, names[i::k]) for i in range(k)]


def setting_folds(family: np.ndarray, interference: np.ndarray, k: int) -> list[np.ndarray]:
    """Co-runner settings held out k ways, as the benchmark's unseen-settings folds do:
    boolean masks of the held-out rows; a run of family f (index j among the sorted
    non-baseline families) with n pods (the `<n>_` of its interference name, else 0) goes
    to fold (n + j) mod k, so each fold holds some pod counts of every family out while the
    family's others train. Baseline runs are never held out. [] with fewer than two
    settings."""
    fams = sorted(set(family.tolist()) - {"baseline"})
    pods = np.array([int(m.group(1)) if (m := re.match(r"(\d+)_", str(i))) else 0
                     for i in interference])
    fold = np.array([-1 if f == "baseline" else (n + fams.index(f)) % k
                     for f, n in zip(family.tolist(), pods.tolist(), strict=True)])
    held = [fold == i for i in range(k)]
    settings = {(f, n) for f, n in zip(family.tolist(), pods.tolist(), strict=True)
                if f != "baseline"}
    return [h for h in held if h.any()] if len(settings) >= 2 else []


#: inner protocols: `series` = grouped k-fold by series; `series+settings` also holds
#: co-runner settings out (`setting_folds`) and scores a candidate by the mean of the two
INNER = ("series", "series+settings")


def select(train: pl.DataFrame, candidates=CANDIDATES, k: int = 3, coverage: float = 0.9,
           inner: str = "series+settings") -> tuple[Candidate, dict[str, float], float]:
    """The inner protocol on training runs only (`train`: vm, perf, feature columns and for
    `series+settings` family and interference): every candidate's out-of-fold |error| by
    grouped k-fold over the series `vm` and, with `series+settings`, by `setting_folds`
    (both MAEs averaged: the model is scored on unseen series and on unseen co-runner
    settings). Returns (the candidate with the lowest inner MAE, {name: inner MAE pp},
    half-width): the half-width is the `coverage` quantile of the winner's out-of-fold
    |errors| of every inner fold (perf units), a conformal interval pred +- half."""
    if inner not in INNER:
        raise InvalidInputError(f"inner={inner!r}: choose one of {', '.join(INNER)}")
    perf, series = train["perf"].to_numpy(), train["vm"].to_numpy()
    splits = [series_folds(series, k)]
    if inner == "series+settings":
        splits.append(setting_folds(train["family"].to_numpy(),
                                    train["interference"].to_numpy(), k))
    errs, scores = {}, {}
    for cand in candidates:
        cols = columns_of(train, cand.features)
        xa = train.select(cols).to_numpy()
        parts = []
        for folds in filter(None, splits):
            err = np.full(len(perf), np.nan)
            for held in folds:
                err[held] = np.abs(fit_predict(xa[~held], perf[~held], xa[held], cand, cols)
                                   - perf[held])
            parts.append(err[np.isfinite(err)])
        errs[cand.name] = np.concatenate(parts)
        scores[cand.name] = 100 * float(np.mean([e.mean() for e in parts]))
    best = min(candidates, key=lambda c: scores[c.name])
    return best, scores, float(np.quantile(errs[best.name], coverage))


def nested_predictions(task: Task, k: int = 3, coverage: float = 0.9, seeds: int = 3,
                       rounds: int = 300) -> tuple[pl.DataFrame, dict]:
    """The shipped model under the nested protocol: `ColocationGBM` fitted on `task`'s
    train + val windows (selection by inner series folds inside them), predicting its test
    windows. Returns ([window_id, perf, pred, half], {"chosen": variant, "inner": {name:
    MAE pp}}); `half` the model's conformal half-width (perf units)."""
    test = task.windows.filter(pl.col("split") == "test").select("window_id")
    if test.is_empty():
        raise InvalidInputError("nested selection needs test windows")
    m = ColocationGBM(inner_k=k, seeds=seeds, coverage=coverage, rounds=rounds).fit(task)
    metrics = with_references(task).join(test, on="window_id", how="semi")
    pred = m.predict(metrics).select("window_id", pred="perf")
    out = (test.join(task.labels, on="window_id").join(pred, on="window_id")
           .with_columns(half=pl.lit(m.state["half"])).sort("window_id"))
    return out, {"chosen": m.card["variant"], "inner": m.card["selection"]["inner_mae_pp"]}


class ColocationGBM(SavedModel):
    """The co-location default model: run-level GBM whose variant (`CANDIDATES`) is chosen by
    `select` on the training series (train + val splits of the task), refit on all of them;
    saved with `colocation.json` + `gbm_<seed>.txt` and read by
    `colocation_runtime.ColocationRuntime` (the Estimator's interference runtime).
    `seeds` boosters (different bagging) are averaged."""

    kind = "interference"
    MODEL = "gbm-baseline"

    def __init__(self, model: str = MODEL, inner_k: int = 3, seeds: int = 3,
                 coverage: float = 0.9, rounds: int = 300, inner: str = "series+settings"):
        super().__init__()
        self.inner_k, self.seeds, self.coverage, self.rounds = inner_k, seeds, coverage, rounds
        self.inner = inner
        self.state: dict | None = None
        self.boosters: list = []
        self.fallback_boosters: list = []

    @property
    def is_fitted(self) -> bool:
        return self.state is not None

    def fit(self, task: Task) -> ColocationGBM:
        """Select and fit on `task`'s train + val windows (its test split is not read)."""
        feats = run_features(task)
        w = (task.windows.filter(pl.col("split") != "test")
             .join(task.labels, on="window_id").join(feats, on="window_id")
             .sort("window_id"))  # joins do not keep row order; the boosters' bagging does
        cands = [dataclasses.replace(c, rounds=self.rounds) for c in CANDIDATES]
        chosen, inner, half = select(w, cands, self.inner_k, self.coverage, self.inner)
        best = dataclasses.replace(chosen, seeds=self.seeds)
        cols = columns_of(w, best.features)
        self.boosters = fit_boosters(w.select(cols).to_numpy(), w["perf"].to_numpy(), best,
                                     cols)
        counters = [c.split("_", 1)[1] for c in feats.columns if c.startswith("stats:mean_")]
        self.state = {"counters": counters, "columns": cols, "target": best.target,
                      "features": best.features, "seeds": self.seeds, "half": half}
        self.fallback_boosters = []
        if uses_corunners(best.features):
            # a run whose co-runners are unknown (a mix) gets the best variant without them
            alt = min((c for c in cands if not uses_corunners(c.features)),
                      key=lambda c: inner[c.name], default=None)
            if alt is not None:
                alt = dataclasses.replace(alt, seeds=self.seeds)
                alt_cols = columns_of(w, alt.features)
                self.fallback_boosters = fit_boosters(w.select(alt_cols).to_numpy(),
                                                      w["perf"].to_numpy(), alt, alt_cols)
                self.state["fallback"] = {"columns": alt_cols, "target": alt.target,
                                          "features": alt.features, "variant": alt.name}
        self.card.update({"default_model": self.MODEL, "variant": chosen.name,
                          "fallback_variant": self.state.get("fallback", {}).get("variant"),
                          "selection": {"protocol": f"inner {self.inner} grouped "
                                        f"{self.inner_k}-fold on the training series",
                                        "inner_mae_pp": inner},
                          "interval": {"coverage": self.coverage, "half_width_pp": 100 * half,
                                       "method": "conformal on the inner folds"},
                          "data": {"windows": w.height, "series": sorted(set(w["vm"]))}})
        return self

    def predict(self, metrics) -> pl.DataFrame:
        """Long metrics (with `rps`, `replicas`, `base:*` per window: module docstring of
        `colocation_runtime`) -> [window_id, perf, lo, hi]."""
        self.check_fitted()
        from servecast.predictors.interference.colocation_runtime import ColocationRuntime

        rt = ColocationRuntime(self.get_params(), self.state, self.boosters,
                               self.fallback_boosters)
        return pl.DataFrame(rt.predict(metrics))

    def _save(self, path: Path) -> None:
        (path / "colocation.json").write_text(json.dumps(self.state, indent=2))
        for i, b in enumerate(self.boosters):
            b.save_model(str(path / f"gbm_{i}.txt"))
        for i, b in enumerate(self.fallback_boosters):
            b.save_model(str(path / f"fallback_{i}.txt"))

    @classmethod
    def _load(cls, path: Path, card: dict) -> ColocationGBM:
        from servecast.predictors.interference.colocation_runtime import ColocationRuntime

        rt = ColocationRuntime.load(path)
        m = cls.from_params(path, card["params"])
        m.state, m.boosters, m.fallback_boosters = rt.state, rt.boosters, rt.fallback
        return m
