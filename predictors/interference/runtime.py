"""Estimator runtime of the interference predictor: numpy, plus torch for the networks (no
DuckDB, no polars, no Lightning).

    rt = Runtime.load("models/interference")
    rt.interference({"cpu_util": [0.4, 0.9, 0.95], "ctx_switches": [1e4, 3e4, 5e4]})  # -> perf
    rt.predict(long_frame)  # [window_id, t, metric, value] -> {"window_id": [...], "perf": [...]}

Reads what `InterferencePredictor.save` wrote (the card's params, interference.json, net.pt or
gbm.txt) and gives the predictor's numbers. The `gbm` family evaluates its LightGBM trees
with lightgbm itself (its splits route NaN statistics), imported when such a model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from servecast.errors import ModelVersionError
from servecast.predictors.base import read_card
from servecast.predictors.interference.windows import (
    long_columns,
    target_history,
    tensorize,
    window_columns,
    window_index,
    window_stats,
)

NEURAL = ("dual", "temporal", "across")
PERF_MIN = 1e-3  # predictions are clipped to [PERF_MIN, 1]


class Runtime:
    """Loaded interference model; perf in (0, 1], 1 = no degradation."""

    kind = "interference"

    def __init__(self, params: dict, state: dict, net=None, booster=None):
        self.params = params
        self.family = params["model"]
        self.max_steps = int(params["max_steps"])
        norm = state["norm"]
        self.metrics = list(norm["metrics"])
        self.center = np.asarray(norm["center"], dtype=np.float64)
        self.scale = np.asarray(norm["scale"], dtype=np.float64)
        self.mean_perf = float(state["mean_perf"])
        self.net, self.booster = net, booster

    @classmethod
    def load(cls, path: str | Path):
        """The runtime of the model saved in `path`: this class, or
        `colocation_runtime.ColocationRuntime` for the co-location default (gbm-baseline)."""
        path = Path(path)
        params = read_card(path, "interference")["params"]
        if params.get("model") == "gbm-baseline":
            from servecast.predictors.interference.colocation_runtime import ColocationRuntime

            return ColocationRuntime.load(path)
        state_file = path / "interference.json"
        if not state_file.is_file():
            raise ModelVersionError(f"{path}: interference.json missing; re-save the model")
        state = json.loads(state_file.read_text())
        net = booster = None
        if params["model"] in NEURAL:
            net = load_net(path, params, len(state["norm"]["metrics"]))
        elif params["model"] == "gbm":
            import lightgbm as lgb

            booster = lgb.Booster(model_file=str(path / "gbm.txt"))
        return cls(params, state, net, booster)

    def interference(self, metrics_window) -> float:
        """Predicted perf of one metrics window: a mapping metric -> values (equally spaced
        steps, aligned at the end) or metric -> number, or a long frame of one window."""
        return float(self._perf(window_columns(metrics_window))[1][0])

    def predict(self, metrics) -> dict[str, np.ndarray]:
        """Long frame [window_id, t, metric, value] -> columns {window_id, perf}, one entry per
        window in order of first appearance (the predictor's `predict`, without polars)."""
        ids, perf = self._perf(long_columns(metrics))
        return {"window_id": np.asarray(ids), "perf": perf}

    def _perf(self, cols: dict[str, np.ndarray]) -> tuple[list, np.ndarray]:
        if self.family in ("last", "moving_average", "mean"):
            ids, w = window_index(cols["window_id"])
            perf = np.full(len(ids), self.mean_perf)
            target = self.params.get("target_metric")
            if self.family != "mean" and target:
                last, ma = target_history(cols, len(ids), w, target, int(self.params["ma_k"]))
                hist = last if self.family == "last" else ma
                perf = np.where(np.isnan(hist), self.mean_perf, hist)
        else:
            ids, values, mask = tensorize(cols, self.metrics, self.center, self.scale,
                                          self.max_steps)
            if self.net is not None:
                from servecast.predictors.interference.net import predict_net

                perf = predict_net(self.net, values, mask).astype(np.float64)
            else:
                perf = self.booster.predict(window_stats(values, mask),
                                            num_iteration=self.booster.best_iteration or None)
        return ids, np.clip(perf, PERF_MIN, 1.0)


def load_net(path: Path, params: dict, n_metrics: int):
    """The saved network (a seed ensemble when `n_seeds` > 1), CPU, eval mode."""
    from servecast.predictors.base import read_torch_state
    from servecast.predictors.interference.net import InterferenceNet, NetEnsemble

    hp = {k: params[k] for k in ("d_model", "heads", "layers", "dropout", "skip")}
    n_seeds = int(params.get("n_seeds", 1))
    nets = [InterferenceNet(n_metrics, int(params["max_steps"]), branches=params["model"], **hp)
            for _ in range(n_seeds)]
    net = nets[0] if n_seeds == 1 else NetEnsemble(nets)
    net.load_state_dict(read_torch_state(path / "net.pt"))
    return net.eval()
