"""Run-level co-location GBM at prediction time (numpy + lightgbm; no polars, no DuckDB): the
window features both training (`colocation_gbm`) and the Estimator compute, and the runtime
that loads what `colocation_gbm.ColocationGBM.save` wrote.

A window is one run of the service: long rows [window_id, t, metric, value] of its counters
(t = sample index), plus constant metrics `rps` (requests/s), `replicas`, the co-runner pods
`co:cpu`, `co:l3`, `co:membw` (`CORUNNERS`: pods of each co-runner family placed beside
the service, 0 for none; what a scheduler placing the pod knows) and, per counter c,
`base:c` = the mean of c over the service's runs alone (no co-runner) at the same replicas
and rate. A window without `base:c` gets NaN ratio features (LightGBM routes NaN); one
without `rps` gets NaN per-request features. A model may carry a second variant without
co-runner features (`state["fallback"]`, `fallback_<i>.txt`, chosen for unseen co-runner
settings): a run without `co:*` (a mix of unknown make-up) or whose (co:cpu, co:l3,
co:membw) is not among the training runs' settings (`state["seen"]`) is predicted by it,
with its own interval half-width (`state["fallback"]["half"]`). When the fallback names a
network (`state["fallback"]["net"]`), its prediction is the mean of the fallback boosters'
and the network's (`net/temporal/`, loaded by `runtime.Runtime`: torch, no Lightning).

Features (kind prefix `stats:`, `base:`, `rate:`, `co:`), per counter c:
- stats: mean, std, min, max, q10, q90 (numpy 'linear' quantiles), last value and slope
  (per sample) of c over the run; plus `stats:rps`, `stats:replicas`;
- base: ratio mean / base:c and difference mean - base:c;
- rate: mean / rps;
- co: the three co-runner pod counts (not per counter).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from servecast.errors import InvalidInputError, ModelVersionError
from servecast.predictors.base import read_card
from servecast.predictors.interference.windows import long_columns, window_columns

LOAD = ("rps", "replicas")
CORUNNERS = ("co:cpu", "co:l3", "co:membw")
BASE = "base:"
STATS = ("mean", "std", "min", "max", "q10", "q90", "last", "slope")
FEATURE_SETS = {"stats": ("stats",), "stats+base": ("stats", "base"),
                "stats+base+rate": ("stats", "base", "rate"),
                "stats+base+co": ("stats", "base", "co"),
                "stats+base+rate+co": ("stats", "base", "rate", "co")}
PERF_MIN = 1e-3
NET = "temporal"  # the network member of the unseen-settings regime (`colocation_net`)


def member_dir(path: Path) -> Path:
    """Where a saved co-location model keeps its network member: `net/<NET>/`, two levels
    down, so that `Estimator.load` (which reads a model card at its root and one level
    below) never takes the member for the model."""
    return path / "net" / NET


def uses_corunners(features: str) -> bool:
    """Whether feature set `features` (a key of FEATURE_SETS) reads the co-runner pods."""
    return "co" in FEATURE_SETS[features]


def counters_of(cols: dict[str, np.ndarray]) -> list[str]:
    """The counter names of long columns (every metric but rps, replicas, co:* and
    base:*)."""
    return sorted({m for m in set(cols["metric"].tolist())
                   if m not in LOAD + CORUNNERS and not m.startswith(BASE)})


def feature_names(counters: list[str]) -> list[str]:
    """Column names of `window_features` for `counters`, in order."""
    return (["stats:rps", "stats:replicas"]
            + [f"stats:{s}_{c}" for c in counters for s in STATS]
            + [f"base:{s}_{c}" for c in counters for s in ("ratio", "diff")]
            + [f"rate:{c}" for c in counters] + list(CORUNNERS))


def window_features(cols: dict[str, np.ndarray], counters: list[str]
                    ) -> tuple[list, np.ndarray]:
    """(window ids in order of first appearance, features (windows x feature_names))."""
    wid = cols["window_id"]
    ids, first, inv = np.unique(wid, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    w = rank[inv]
    ids = ids[order].tolist()
    ok = np.isfinite(cols["value"])
    const = {}
    for name in [*LOAD, *CORUNNERS, *(BASE + c for c in counters)]:
        v = np.full(len(ids), np.nan)
        sel = ok & (cols["metric"] == name)
        v[w[sel]] = cols["value"][sel]
        const[name] = v
    stats = np.full((len(ids), len(counters), len(STATS)), np.nan)
    for j, c in enumerate(counters):
        sel = ok & (cols["metric"] == c)
        ws, ts, vs = w[sel], cols["t"][sel], cols["value"][sel]
        srt = np.lexsort((ts, ws))
        ws, ts, vs = ws[srt], ts[srt], vs[srt]
        cuts = np.flatnonzero(np.diff(ws)) + 1
        for k, t, v in zip(np.split(ws, cuts), np.split(ts, cuts), np.split(vs, cuts),
                           strict=True):
            if not len(k):
                continue
            tc = t - t.mean()
            den = float((tc * tc).sum())
            stats[k[0], j] = (v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0, v.min(),
                              v.max(), np.quantile(v, 0.1), np.quantile(v, 0.9), v[-1],
                              float((tc * v).sum()) / den if den > 0 else 0.0)
    mean = stats[:, :, 0]
    base = np.column_stack([const[BASE + c] for c in counters]) if counters else mean
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mean / base
        per_req = mean / const["rps"][:, None]
    diff = mean - base
    x = np.column_stack([const["rps"], const["replicas"], stats.reshape(len(ids), -1),
                         np.stack([ratio, diff], axis=2).reshape(len(ids), -1), per_req,
                         *(const[c] for c in CORUNNERS)])
    return ids, np.where(np.isfinite(x), x, np.nan)


def to_target(perf: np.ndarray, target: str) -> np.ndarray:
    """perf as the boosters' target: itself, or y = -log(perf) = log(L / L0) for `log`."""
    return -np.log(np.clip(perf, 1e-6, 1.0)) if target == "log" else perf


def from_target(y: np.ndarray, target: str) -> np.ndarray:
    """Inverse of `to_target`, clipped to perf in [0, 1]."""
    return np.exp(-np.maximum(y, 0.0)) if target == "log" else np.clip(y, 0.0, 1.0)


class ColocationRuntime:
    """Loaded run-level GBM (`params["model"] == "gbm-baseline"`); perf in (0, 1]."""

    kind = "interference"

    def __init__(self, params: dict, state: dict, boosters: list, fallback: list | None = None,
                 net=None):
        self.params, self.state, self.boosters = params, state, boosters
        self.fallback, self.net = list(fallback or []), net
        self.family = params["model"]  # "gbm-baseline", as Runtime.family names its model
        self.counters = list(state["counters"])
        names = feature_names(self.counters)
        self.columns = [names.index(c) for c in state["columns"]]
        self.co_columns = [i for i, c in enumerate(state["columns"]) if c in CORUNNERS]
        alt = state.get("fallback")
        self.fallback_columns = [names.index(c) for c in alt["columns"]] if alt else []
        self.half = float(state["half"])
        self.half_unseen = float(alt.get("half", self.half)) if alt else self.half
        self.seen = {tuple(s) for s in state["seen"]} if "seen" in state else None

    @classmethod
    def load(cls, path: str | Path) -> ColocationRuntime:
        """The model saved in `path`, its network member (if any) included."""
        path = Path(path)
        params, state, boosters, fallback = cls.read(path)
        net = None
        if state.get("fallback", {}).get("net"):
            from servecast.predictors.interference.runtime import Runtime

            net = Runtime.load(member_dir(path))
        return cls(params, state, boosters, fallback, net)

    @staticmethod
    def read(path: Path) -> tuple[dict, dict, list, list]:
        """(card params, state, boosters, fallback boosters) saved in `path`, without the
        network member (`member_dir`; whoever loads it decides how)."""
        import lightgbm as lgb

        params = read_card(path, "interference")["params"]
        state_file = path / "colocation.json"
        if not state_file.is_file():
            raise ModelVersionError(f"{path}: colocation.json missing; re-save the model")
        state = json.loads(state_file.read_text())
        seeds = range(int(state["seeds"]))
        files = [path / f"gbm_{i}.txt" for i in seeds]
        alt = [path / f"fallback_{i}.txt" for i in seeds] if "fallback" in state else []
        missing = [f.name for f in files + alt if not f.is_file()]
        if missing:
            raise ModelVersionError(f"{path}: {', '.join(missing)} missing; re-save the model")
        return (params, state, [lgb.Booster(model_file=str(f)) for f in files],
                [lgb.Booster(model_file=str(f)) for f in alt])

    def interference(self, metrics_window) -> float:
        """Predicted perf of one run: a mapping metric -> values or a long frame."""
        return float(self._perf(window_columns(metrics_window))[1][0])

    def predict(self, metrics) -> dict[str, np.ndarray]:
        """Long frame [window_id, t, metric, value] -> {window_id, perf, lo, hi}; lo / hi:
        the conformal interval of the variant that predicted the run (`half`, or the
        fallback's half for a run of an unseen or unknown setting)."""
        out = self.predict_half(metrics)
        perf, half = out["perf"], out.pop("half")
        return {**out, "lo": np.clip(perf - half, 0.0, 1.0), "hi": np.clip(perf + half, 0.0, 1.0)}

    def predict_half(self, metrics) -> dict[str, np.ndarray]:
        """`predict`'s window_id and perf, and `half`: the interval half-width (perf units)
        of the variant that predicted each window (before clipping to [0, 1])."""
        ids, perf, alt = self._perf(long_columns(metrics))
        return {"window_id": np.asarray(ids), "perf": perf,
                "half": np.where(alt, self.half_unseen, self.half)}

    def _perf(self, cols: dict[str, np.ndarray]) -> tuple[list, np.ndarray, np.ndarray]:
        """(window ids, perf, whether the fallback variant predicted the window)."""
        have = set(cols["metric"].tolist())
        if not have & set(self.counters):
            raise InvalidInputError(
                f"metrics: none of the model's counters ({', '.join(self.counters[:4])}, ...)"
                f"; got {', '.join(sorted(have)[:6])}")
        if self.co_columns and not self.fallback and not have & set(CORUNNERS):
            raise InvalidInputError(
                "metrics: this model's features need the co-runner pods "
                f"{', '.join(CORUNNERS)} per run (0 for a family not placed beside the "
                "service); got none")
        ids, full = window_features(cols, self.counters)
        x = full[:, self.columns]
        perf = self._predict(self.boosters, x, self.state["target"])
        unknown = np.zeros(len(ids), bool)
        if self.fallback:  # runs of unknown or unseen co-runner settings: the fallback
            co = full[:, -len(CORUNNERS):]  # feature_names ends with CORUNNERS
            unknown = np.isnan(co).any(axis=1)
            if self.seen is not None:
                unknown |= np.array([tuple(r) not in self.seen for r in co.tolist()])
            if unknown.any():
                alt = full[unknown][:, self.fallback_columns]
                perf[unknown] = self._predict(self.fallback, alt,
                                              self.state["fallback"]["target"])
                if self.net is not None:  # the mean of the fallback and the network
                    perf[unknown] = (perf[unknown] + self._net(cols, np.asarray(ids)[unknown])) / 2
        return ids, perf, unknown

    def _net(self, cols: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
        """The network member's perf of the windows `ids` (in that order)."""
        keep = np.isin(cols["window_id"], ids)
        got, perf = self.net._perf({k: v[keep] for k, v in cols.items()})
        at = {w: i for i, w in enumerate(got)}
        return perf[[at[w] for w in ids.tolist()]]

    @staticmethod
    def _predict(boosters: list, x: np.ndarray, target: str) -> np.ndarray:
        y = np.mean([b.predict(x) for b in boosters], axis=0)
        return np.clip(from_target(y, target), PERF_MIN, 1.0)
