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
fall (never rise) as any of them grows. Loss (`LOSSES`): L1 (the conditional median) or
Huber (delta `HUBER_DELTA` in target units: squared near the fit, so closer to a mean).

Two regimes, two variants (`select`): a run whose co-runner setting (pods of each family)
occurs in the training runs is predicted by the variant with the lowest inner MAE over
series folds (an unseen series, seen settings); a run of a setting the training runs lack,
or whose co-runners are not given, by the variant without co-runner features with the
lowest inner MAE over setting folds (`setting_folds`, built like the benchmark's outer
unseen-settings folds), alone or averaged with the temporal network (`colocation_net`),
whichever has the lower inner MAE on the same setting folds. Each regime's interval comes
from its own inner errors.

`nested_predictions`: for each outer fold (test = held-out windows), every candidate of
`CANDIDATES` is scored by the inner folds of the outer training runs only; the chosen
variants are refit on all outer training runs and predict the outer test runs. Nothing of
the outer test split is seen in selection.
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
    NET,
    counters_of,
    feature_names,
    from_target,
    member_dir,
    to_target,
    uses_corunners,
    window_features,
)
from servecast.predictors.interference.tasks import Task
from servecast.predictors.interference.windows import long_columns

TARGETS = ("perf", "log")
LOSSES = ("l1", "huber")
HUBER_DELTA = 0.1
__all__ = ["CANDIDATES", "Candidate", "ColocationGBM", "from_target", "nested_predictions",
           "run_features", "to_target", "with_references"]


@dataclass(frozen=True)
class Candidate:
    """One variant: feature set (key of FEATURE_SETS), target (of TARGETS), boosting
    rounds, seeds averaged (an ensemble of `seeds` boosters with different bagging), loss
    (of LOSSES) and `monotone`: perf non-increasing in every co-runner pod count (`co:*`;
    LightGBM allows monotone constraints with the Huber loss, not L1, so such a variant
    boosts Huber whatever `loss` says)."""

    features: str = "stats+base"
    target: str = "log"
    rounds: int = 300
    seeds: int = 1
    monotone: bool = False
    loss: str = "l1"

    @property
    def name(self) -> str:
        return (f"{self.features}/{self.target}" + ("/mono" if self.monotone else "")
                + ("/huber" if self.loss == "huber" and not self.monotone else "")
                + (f"/x{self.seeds}" if self.seeds > 1 else ""))


#: the variants the inner protocol chooses from; the set itself was narrowed on inner-fold
#: MAE only (docs/results.md#co-runner-aware-gbm-and-the-networks-issue-26-h-ntua3 and
#: the issue-26 h-ntua4 section)
CANDIDATES = (Candidate("stats+base"), Candidate("stats+base+rate"),
              Candidate("stats+base+co", monotone=True),
              Candidate("stats+base", loss="huber"), Candidate("stats+base+rate", loss="huber"))


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
    """`cand.seeds` LightGBM boosters (`cand.loss`: L1, i.e. the conditional median of the
    target, or Huber with delta HUBER_DELTA; Huber and the co-runner constraints of
    `columns` when `cand.monotone`) fitted on (x, perf) with `cand.rounds` rounds."""
    if cand.loss not in LOSSES:
        raise InvalidInputError(f"loss={cand.loss!r}: choose one of {', '.join(LOSSES)}")
    import lightgbm as lgb

    params = dict(learning_rate=0.05, num_leaves=15, min_data_in_leaf=15,
                  bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.5,
                  objective="l1", verbose=-1, num_threads=1)
    if cand.loss == "huber" or cand.monotone:
        params.update(objective="huber", alpha=HUBER_DELTA)
    if cand.monotone:  # the target grows (log) or perf falls with more co-runner pods
        sign = 1 if cand.target == "log" else -1
        params.update(monotone_constraints=[
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


def pods_of(interference: np.ndarray) -> np.ndarray:
    """Co-runner pod count of each interference name (the `<n>_` prefix), else 0."""
    return np.array([int(m.group(1)) if (m := re.match(r"(\d+)_", str(i))) else 0
                     for i in interference])


def setting_folds(family: np.ndarray, interference: np.ndarray) -> list[np.ndarray]:
    """Co-runner settings held out the way the benchmark's outer unseen-settings folds are
    built, inside the training runs: boolean masks of the held-out rows. For each
    non-baseline family (index j among the sorted families) the m pod counts present in
    training are sorted; with k = the largest m folds, fold i holds out the one of rank
    (i + j) mod k (none when that rank is >= m), so a fold holds at most one pod count of
    every family out while the family's others train, and every setting is held out once
    (the outer folds' rotation when every family has k pod counts). A family with a single
    pod count is never held out, nor are baseline runs. [] when no family has two pod
    counts (nothing could train for a held-out setting)."""
    fams = sorted(set(family.tolist()) - {"baseline"})
    pods = pods_of(interference)
    ranks = {f: sorted(set(pods[family == f].tolist())) for f in fams}
    k = max((len(r) for r in ranks.values()), default=0)
    if k < 2:
        return []
    held = []
    for i in range(k):
        mask = np.zeros(len(family), bool)
        for j, f in enumerate(fams):
            r, rank = ranks[f], (i + j) % k
            if len(r) > 1 and rank < len(r):
                mask |= (family == f) & (pods == r[rank])
        held.append(mask)
    return [h for h in held if h.any()]


#: inner protocols: `series` = grouped k-fold by series only (one variant for every run);
#: `series+settings` also scores the candidates on `setting_folds` for unseen settings
INNER = ("series", "series+settings")


@dataclass(frozen=True)
class Selection:
    """What `select` chose: `seen` predicts runs of co-runner settings present in training
    (lowest inner MAE over series folds), `unseen` runs of other or unknown settings (the
    candidate without co-runner features with the lowest inner MAE over setting folds;
    over series folds when there are none); `scores` = {protocol: {name: inner MAE pp}};
    `half_seen` / `half_unseen` the conformal half-widths (perf units) from the chosen
    variant's out-of-fold |errors| of that protocol."""

    seen: Candidate
    unseen: Candidate
    scores: dict[str, dict[str, float]]
    half_seen: float
    half_unseen: float
    unseen_net: bool = False


def select(train: pl.DataFrame, candidates=CANDIDATES, k: int = 3, coverage: float = 0.9,
           inner: str = "series+settings", net_oof=None) -> Selection:
    """The inner protocol on training runs only (`train`: vm, perf, feature columns and for
    `series+settings` family and interference): every candidate's out-of-fold |error| by
    grouped k-fold over the series `vm` and, with `series+settings`, by `setting_folds`
    (skipped when the runs have fewer than two settings of a family). With `net_oof` (a
    function: boolean mask of held-out `train` rows -> the network's perf for them, trained
    without them) and setting folds, the unseen-settings choice is also between the chosen
    GBM alone and the mean of it and the network on the same setting folds (score
    `<variant>+<NET>`; the mean when its inner MAE is lower: `unseen_net`). Returns the
    `Selection`; its half-widths are the `coverage` quantile of the chosen variant's
    out-of-fold |errors| (conformal intervals pred +- half)."""
    if inner not in INNER:
        raise InvalidInputError(f"inner={inner!r}: choose one of {', '.join(INNER)}")
    perf, series = train["perf"].to_numpy(), train["vm"].to_numpy()
    splits = {"series": series_folds(series, k)}
    if inner == "series+settings":
        splits["settings"] = setting_folds(train["family"].to_numpy(),
                                           train["interference"].to_numpy())
    splits = {p: f for p, f in splits.items() if f}
    errs: dict[str, dict[str, np.ndarray]] = {p: {} for p in splits}
    preds: dict[str, dict[str, np.ndarray]] = {p: {} for p in splits}
    for cand in candidates:
        cols = columns_of(train, cand.features)
        xa = train.select(cols).to_numpy()
        for proto, folds in splits.items():
            pred = np.full(len(perf), np.nan)
            for held in folds:
                pred[held] = fit_predict(xa[~held], perf[~held], xa[held], cand, cols)
            preds[proto][cand.name] = pred
            err = np.abs(pred - perf)
            errs[proto][cand.name] = err[np.isfinite(err)]
    scores = {p: {n: 100 * float(e.mean()) for n, e in v.items()} for p, v in errs.items()}
    seen = min(candidates, key=lambda c: scores["series"][c.name])
    proto = "settings" if "settings" in scores else "series"
    free = [c for c in candidates if not uses_corunners(c.features)] or list(candidates)
    unseen = min(free, key=lambda c: scores[proto][c.name])
    unseen_err, with_net = errs[proto][unseen.name], False
    if net_oof is not None and proto == "settings":
        net = np.full(len(perf), np.nan)
        for held in splits[proto]:
            net[held] = net_oof(held)
        err = np.abs((preds[proto][unseen.name] + net) / 2 - perf)
        err = err[np.isfinite(err)]
        scores[proto][f"{unseen.name}+{NET}"] = 100 * float(err.mean())
        if err.mean() < unseen_err.mean():
            unseen_err, with_net = err, True
    return Selection(seen, unseen, scores,
                     float(np.quantile(errs["series"][seen.name], coverage)),
                     float(np.quantile(unseen_err, coverage)), with_net)


def nested_predictions(task: Task, k: int = 3, coverage: float = 0.9, seeds: int = 3,
                       rounds: int = 300, net: bool = True, net_train_steps: int = 150,
                       save_to: Path | None = None) -> tuple[pl.DataFrame, dict]:
    """The shipped model under the nested protocol: `ColocationGBM` fitted on `task`'s
    train + val windows (selection by inner folds inside them), predicting its test
    windows. Returns ([window_id, perf, pred, half], {"chosen": variant for seen settings,
    "unseen": variant for unseen ones (`<variant>+temporal` when the network member was
    chosen), "inner": {protocol: {name: MAE pp}}}); `half` the conformal half-width (perf
    units) of the variant that predicted the window. With `save_to`, the fitted model is
    saved there (`ColocationGBM.save`)."""
    test = task.windows.filter(pl.col("split") == "test").select("window_id")
    if test.is_empty():
        raise InvalidInputError("nested selection needs test windows")
    m = ColocationGBM(inner_k=k, seeds=seeds, coverage=coverage, rounds=rounds, net=net,
                      net_train_steps=net_train_steps).fit(task)
    if save_to is not None:
        m.save(save_to)
    metrics = with_references(task).join(test, on="window_id", how="semi")
    got = m.runtime().predict_half(metrics)
    pred = pl.DataFrame({"window_id": got["window_id"], "pred": got["perf"],
                         "half": got["half"]})
    out = test.join(task.labels, on="window_id").join(pred, on="window_id").sort("window_id")
    sel = m.card["selection"]
    return out, {"chosen": m.card["variant"], "unseen": m.card["unseen_variant"],
                 "inner": {"series": sel["inner_mae_pp"],
                           **({"settings": sel["inner_unseen_mae_pp"]}
                              if sel["inner_unseen_mae_pp"] else {})}}


class ColocationGBM(SavedModel):
    """The co-location default model: run-level GBM whose variant (`CANDIDATES`) is chosen by
    `select` on the training series (train + val splits of the task), refit on all of them;
    saved with `colocation.json` + `gbm_<seed>.txt` and read by
    `colocation_runtime.ColocationRuntime` (the Estimator's interference runtime).
    `seeds` boosters (different bagging) are averaged. With `net` (default) the
    unseen-settings regime may add the temporal network (`colocation_net`, `net_train_steps`
    optimizer steps) as an equal-weight member, when `select` finds the mean better on the
    inner setting folds; it is then trained on all training runs and saved in
    `colocation_runtime.member_dir`."""

    kind = "interference"
    MODEL = "gbm-baseline"

    def __init__(self, model: str = MODEL, inner_k: int = 3, seeds: int = 3,
                 coverage: float = 0.9, rounds: int = 300, inner: str = "series+settings",
                 net: bool = True, net_train_steps: int = 150):
        super().__init__()
        self.inner_k, self.seeds, self.coverage, self.rounds = inner_k, seeds, coverage, rounds
        self.inner, self.net, self.net_train_steps = inner, bool(net), int(net_train_steps)
        self.state: dict | None = None
        self.boosters: list = []
        self.fallback_boosters: list = []
        self.net_member = None  # InterferencePredictor of the unseen-settings regime, or None
        self._runtime: tuple | None = None  # (the parts it was built of, the runtime)

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
        from servecast.predictors.interference import colocation_net as cn

        ids = w["window_id"].to_list()

        def net_oof(held: np.ndarray) -> np.ndarray:
            return cn.held_out_predictions(task, [i for i, h in zip(ids, held, strict=True)
                                                  if h], self.net_train_steps)

        sel = select(w, cands, self.inner_k, self.coverage, self.inner,
                     net_oof if self.net else None)
        perf = w["perf"].to_numpy()

        def refit(cand: Candidate) -> tuple[list, list[str]]:
            cand = dataclasses.replace(cand, seeds=self.seeds)
            cols = columns_of(w, cand.features)
            return fit_boosters(w.select(cols).to_numpy(), perf, cand, cols), cols

        self.boosters, cols = refit(sel.seen)
        counters = [c.split("_", 1)[1] for c in feats.columns if c.startswith("stats:mean_")]
        self.state = {"counters": counters, "columns": cols, "target": sel.seen.target,
                      "features": sel.seen.features, "seeds": self.seeds,
                      "half": sel.half_seen}
        self.fallback_boosters, self.net_member = [], None
        if sel.unseen != sel.seen or sel.unseen_net:  # unseen or unknown settings: fallback
            # the same candidate refits to the same boosters (same seeds, same rows)
            self.fallback_boosters, alt_cols = ((self.boosters, cols) if sel.unseen == sel.seen
                                                else refit(sel.unseen))
            co = w.select(CORUNNERS).to_numpy()
            self.state["seen"] = sorted({tuple(r) for r in co[~np.isnan(co).any(axis=1)]
                                         .tolist()})
            self.state["fallback"] = {"columns": alt_cols, "target": sel.unseen.target,
                                      "features": sel.unseen.features,
                                      "variant": sel.unseen.name, "half": sel.half_unseen}
        unseen = sel.scores.get("settings", {})
        member = f"{sel.unseen.name}+{NET}"
        if sel.unseen_net:
            self.net_member = cn.fit_net(task, (), self.net_train_steps)
            self.state["fallback"].update(net=NET, variant=member)
        self.card.update({"default_model": self.MODEL, "variant": sel.seen.name,
                          "unseen_variant": member if sel.unseen_net else sel.unseen.name,
                          "unseen_network": _net_verdict(sel, member, unseen)
                          if self.net and unseen else None,
                          "fallback_variant": self.state.get("fallback", {}).get("variant"),
                          "selection": {"protocol": f"inner {self.inner}: grouped "
                                        f"{self.inner_k}-fold on the training series picks "
                                        "the variant for seen co-runner settings, setting "
                                        "folds the one (without co-runner features) for "
                                        "unseen or unknown settings",
                                        "inner_mae_pp": sel.scores["series"],
                                        "inner_unseen_mae_pp": unseen},
                          "interval": {"coverage": self.coverage,
                                       "half_width_pp": 100 * sel.half_seen,
                                       "half_width_unseen_pp": 100 * sel.half_unseen,
                                       "method": "conformal on the inner folds"},
                          "data": {"windows": w.height, "series": sorted(set(w["vm"]))}})
        return self

    def runtime(self):
        """The fitted model as a `colocation_runtime.ColocationRuntime`, built once and kept
        while state, boosters and network member stay the same objects (`fit` and `load`
        replace them)."""
        self.check_fitted()
        parts = (self.state, self.boosters, self.fallback_boosters, self.net_member)
        if self._runtime is None or any(a is not b for a, b in zip(self._runtime[0], parts,
                                                                     strict=True)):
            self._runtime = parts, self._build_runtime()
        return self._runtime[1]

    def _build_runtime(self):
        from servecast.predictors.interference.colocation_runtime import ColocationRuntime

        net = None
        if self.net_member is not None:
            from servecast.predictors.interference.runtime import Runtime

            p = self.net_member
            net = Runtime(p.get_params(), {"norm": p.norm.to_dict(), "mean_perf": p.mean_perf},
                          net=p.net)
        return ColocationRuntime(self.get_params(), self.state, self.boosters,
                                 self.fallback_boosters, net)

    def predict(self, metrics) -> pl.DataFrame:
        """Long metrics (with `rps`, `replicas`, `co:*`, `base:*` per window: module
        docstring of `colocation_runtime`) -> [window_id, perf, lo, hi]."""
        return pl.DataFrame(self.runtime().predict(metrics))

    def _save(self, path: Path) -> None:
        (path / "colocation.json").write_text(json.dumps(self.state, indent=2))
        for i, b in enumerate(self.boosters):
            b.save_model(str(path / f"gbm_{i}.txt"))
        for i, b in enumerate(self.fallback_boosters):
            b.save_model(str(path / f"fallback_{i}.txt"))
        if self.net_member is not None:
            self.net_member.save(member_dir(path))

    @classmethod
    def _load(cls, path: Path, card: dict) -> ColocationGBM:
        from servecast.predictors.interference.colocation_runtime import ColocationRuntime

        m = cls.from_params(path, card["params"])
        _, m.state, m.boosters, m.fallback_boosters = ColocationRuntime.read(path)
        if m.state.get("fallback", {}).get("net"):  # read once, as the predictor
            from servecast.predictors.interference.predictor import InterferencePredictor

            m.net_member = InterferencePredictor.load(member_dir(path))
        return m


def _net_verdict(sel: Selection, member: str, unseen: dict[str, float]) -> str:
    """The model card's sentence on the network member of the unseen-settings regime."""
    alone, mean = unseen[sel.unseen.name], unseen.get(member)
    if mean is None:
        return "not scored (no inner setting folds)"
    return (f"{'chosen' if sel.unseen_net else 'not chosen'}: inner setting-fold MAE "
            f"{mean:.2f} pp for the mean of {sel.unseen.name} and the network against "
            f"{alone:.2f} pp for {sel.unseen.name} alone (the lower wins)")
