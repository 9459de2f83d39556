"""The Estimator's kernel-latency runtime: numpy only (no torch, no Lightning, no DuckDB).

`Runtime.load(model_dir).kernel_latency(op, shape, device_spec)` -> ms in ~tens of µs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from servecast.predictors.kernel_latency.ops import OPS, SHAPE_COLUMNS, canonical_op, shape_dict
from servecast.predictors.kernel_latency.specs import SPEC_KEYS, check_spec


def mlp_forward(weights: list[np.ndarray], X: np.ndarray) -> np.ndarray:
    """Numpy forward pass of the exported MLP (SiLU hidden layers) -> one value per row."""
    h = X
    last = len(weights) // 2 - 1
    for i in range(0, len(weights), 2):
        h = h @ weights[i] + weights[i + 1]
        if i // 2 < last:
            h = h / (1.0 + np.exp(-h))
    return h[:, 0]


def spec_feature_slice(n_features: int) -> slice:
    """Column range of the raw spec features inside `physics.features`' matrix."""
    from servecast.predictors.kernel_latency.ops import FAMILIES, OP_NAMES

    end = n_features - len(OP_NAMES) - len(FAMILIES)
    return slice(end - len(SPEC_KEYS), end)


class Runtime:
    """A loaded kernel-latency model (weights.npz + config.json written by the predictor)."""

    def __init__(self, weights: list[np.ndarray], mean: np.ndarray, std: np.ndarray,
                 use_spec_features: bool):
        self.weights = [w.astype(np.float64) for w in weights]
        self.mean, self.std = mean.astype(np.float64), std.astype(np.float64)
        self.use_spec = use_spec_features
        self._keep: np.ndarray | None = None  # feature columns the MLP reads

    @classmethod
    def load(cls, path: str | Path) -> Runtime:
        from servecast.predictors.base import read_card

        path = Path(path)
        read_card(path, "kernel_latency")
        cfg = json.loads((path / "config.json").read_text())
        with np.load(path / "weights.npz") as z:
            weights = [z[f"w{i}"] for i in range(len(z.files) - 2)]
            return cls(weights, z["mean"], z["std"], bool(cfg.get("use_spec_features")))

    def _predict(self, ops: np.ndarray, shape: dict, spec: np.ndarray) -> np.ndarray:
        from servecast.predictors.kernel_latency.physics import features

        X, base = features(ops, shape, spec)
        if self._keep is None:
            keep = np.arange(X.shape[1])
            if not self.use_spec:
                keep = np.delete(keep, spec_feature_slice(X.shape[1]))
            self._keep = keep
        return base * np.exp(mlp_forward(self.weights, (X[:, self._keep] - self.mean) / self.std))

    @staticmethod
    def _spec_row(device_spec: Mapping) -> np.ndarray:
        checked = check_spec(device_spec)
        return np.array([[checked[k] for k in SPEC_KEYS]])

    def kernel_latency(self, op: str, shape: Sequence[float] | Mapping[str, float],
                       device_spec: Mapping) -> float:
        """Latency (ms) of `op` with `shape` (values in `ops.shape_columns(op)` order, or a
        mapping) on the device described by `device_spec` (NeuSight spec keys)."""
        name = canonical_op(op)
        dims = shape_dict(name, shape)
        spec = self._spec_row(device_spec)
        cols = {c: np.array([dims[c]]) for c in OPS[name][1]}
        return float(self._predict(np.array([name], dtype=object), cols, spec)[0])

    def roofline(self, op: str, shape: Sequence[float] | Mapping[str, float],
                 device_spec: Mapping) -> float:
        """The physics-only (roofline + launch floor) latency in ms, for comparison."""
        from servecast.predictors.kernel_latency.physics import features

        name = canonical_op(op)
        dims = shape_dict(name, shape)
        cols = {c: np.array([dims[c]]) for c in OPS[name][1]}
        return float(features(np.array([name], dtype=object), cols,
                              self._spec_row(device_spec))[1][0])

    def kernel_latency_batch(self, frame, devices: Mapping[str, Mapping]) -> np.ndarray:
        """Latency (ms) per row of frame[op, device, shape columns]."""
        from servecast.predictors.kernel_latency.frames import kernel_rows

        rows = kernel_rows(frame, devices)
        return self._predict(rows.ops, {c: rows.shape[c] for c in SHAPE_COLUMNS}, rows.spec)
