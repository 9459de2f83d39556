"""`KernelLatencyPredictor`: op + shape + device spec sheet -> kernel latency (ms).

Physics first (FLOPs, bytes, roofline, wave quantization, see `physics`), then a small MLP
learns the log residual log(latency / roofline). Inputs are op, shape and spec only: launch
configurations and kernel names are never read, so any device with a spec sheet works.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.base import Predictor
from servecast.predictors.kernel_latency.frames import kernel_rows
from servecast.predictors.kernel_latency.ops import FAMILIES, OP_NAMES
from servecast.predictors.kernel_latency.physics import (
    DENSE_COLUMNS,
    DEVICE_COLUMNS,
    baseline_ms,
    features,
    kernel_work,
)
from servecast.predictors.kernel_latency.runtime import (
    MergedMLP,
    column_stats,
    member_count,
    spec_feature_slice,
    standardize,
)
from servecast.predictors.metrics import mdape

#: feature views of the ensemble members (see `KernelLatencyPredictor`)
VIEWS = ("spec", "shape")


def view_columns(view: str, n_features: int) -> np.ndarray:
    """Columns of the predictor's feature matrix (`n_features` wide: the dense physics
    columns, the spec logs if used, the one-hots) that members of `view` read."""
    cols = np.arange(n_features)
    if view == "spec":
        return cols
    shape_dense = [i for i, c in enumerate(DENSE_COLUMNS) if c not in DEVICE_COLUMNS]
    onehots = cols[n_features - len(OP_NAMES) - len(FAMILIES):]
    return np.concatenate([shape_dense, onehots]).astype(int)


def view_weights(member_views: list[str], shape_weight: float) -> list[float]:
    """Each member's weight in the ensemble average: the shape view's members share
    `shape_weight`, the spec view's the rest; with one view only, all members weigh alike."""
    n = {v: member_views.count(v) for v in set(member_views)}
    if len(n) == 1:
        return [1.0 / len(member_views)] * len(member_views)
    share = {"shape": shape_weight, "spec": 1.0 - shape_weight}
    return [share[v] / n[v] for v in member_views]


class KernelLatencyPredictor(Predictor):
    """Cross-device kernel latency: `fit(frame)`, `predict(frame)` -> frame[latency_ms] (ms).

    `devices` (the fixed context) maps every device name the frames use (column `device`)
    to its spec sheet; `with_devices` gives a copy that also knows other devices (a GPU never
    measured: same weights, more spec sheets). The target is the frame's `latency_ms` column.

    `use_spec_features` feeds the raw (log) spec numbers to the MLP besides the roofline
    terms; off by default, so the learner sees devices only through physics and cannot
    memorise the few training GPUs. `max_rows` subsamples the training rows per ensemble
    member (seeded; unset: each member draws 1/`ensemble` of the rows).

    `views` are two hypotheses of how a GPU never measured behaves, each learned by `ensemble`
    members (seeds seed..seed+n-1, each on its own `max_rows` subsample):
      "spec"   the residual depends on the shape and the device-relative physics (waves over
               the SMs, machine balance, launch floor and L2 fit);
      "shape"  the residual depends on the op and shape only: the device enters through the
               roofline alone, so the GPU inherits the training GPUs' average efficiency
               profile (what their measurements of the same shapes transfer, see
               `evaluation.transfer_bounds`).
    All members are averaged in log space, the shape view's with total weight
    `shape_weight` and the spec view's with the rest (equal weights within a view; views
    alone: plain mean). A held-out GPU is an extrapolation in device space: single MLPs
    disagree a lot from seed to seed and the two views err in different directions (their
    average scores best over all ops: docs/results.md). The members are
    merged into one MLP (block-diagonal; a shape member reads zeros from the device columns),
    so the runtime is the same for any views and members.
    """

    kind = "kernel_latency"

    def __init__(self, devices: Mapping[str, Mapping] | None = None, epochs: int = 20,
                 hidden: int = 64, layers: int = 3,
                 batch_size: int = 1024, lr: float = 3e-3, max_rows: int | None = None,
                 use_spec_features: bool = False, seed: int = 0, ensemble: int = 3,
                 views: tuple[str, ...] = ("spec", "shape"), shape_weight: float = 0.25,
                 **trainer_kw):
        super().__init__()
        self.devices = {str(k): dict(v) for k, v in (devices or {}).items()}
        self.config = dict(epochs=epochs, hidden=hidden, layers=layers, batch_size=batch_size,
                           lr=lr, max_rows=max_rows, use_spec_features=use_spec_features,
                           seed=seed, ensemble=ensemble, views=list(views),
                           shape_weight=shape_weight)
        bad = [v for v in views if v not in VIEWS] or ([] if views else ["(none)"])
        if bad:
            raise InvalidInputError(f"unknown view(s) {', '.join(map(str, bad))}; "
                                    f"choose from {', '.join(VIEWS)}")
        if not 0.0 <= shape_weight <= 1.0:
            raise InvalidInputError(f"shape_weight={shape_weight!r}: give a weight in [0, 1] "
                                    "(the shape view's share of the ensemble average)")
        self.trainer_kw = trainer_kw
        self.weights: list[np.ndarray] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    # -- features -------------------------------------------------------------------------
    def _design(self, frame, need_latency: bool):
        rows = kernel_rows(frame, self.devices, need_latency)
        X, base = features(rows.ops, rows.shape, rows.spec)
        if not self.config["use_spec_features"]:
            X = np.delete(X, spec_feature_slice(X.shape[1]), axis=1)
        return rows, X, base

    def _training(self, frame):
        """(rows, standardized features float32 (rows, n), targets log(latency_ms /
        roofline_ms) float32, mean, std) of the kernels `fit` trains on: every member shares
        the whole training set's mean and std, standardized as `predict` does."""
        rows, X, base = self._design(frame, need_latency=True)
        mean, std = column_stats(X)
        y = (np.log(rows.latency_ms) - np.log(base)).astype(np.float32)
        return rows, standardize(X, mean, std).astype(np.float32), y, mean, std

    def training_arrays(self, frame) -> tuple[np.ndarray, np.ndarray]:
        """What each of `fit`'s MLPs trains on (before its row draw and view's columns):
        standardized features float32 (rows, n) and targets log(latency_ms / roofline_ms)
        float32 (rows,); for timing the training alone (benchmarks/training_speedup.py)."""
        _rows, Xs, y, _mean, _std = self._training(frame)
        return Xs, y

    # -- protocol ---------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.weights is not None

    def with_devices(self, devices: Mapping[str, Mapping]) -> KernelLatencyPredictor:
        """A copy (sharing the weights) whose device context also holds `devices`."""
        params = self.get_params() | {"devices": self.devices | dict(devices)}
        out = type(self)(**params)
        out.weights, out.mean, out.std, out.card = self.weights, self.mean, self.std, self.card
        return out

    def fit(self, frame, target=None) -> KernelLatencyPredictor:
        """Fit on `frame` [op, device, shape columns, latency_ms] (target=None: the target is
        the latency_ms column). Returns self."""
        if target is not None:
            raise InvalidInputError("the target is the frame's latency_ms column; pass "
                                    "target=None")
        rows, Xs, y, self.mean, self.std = self._training(frame)
        cfg = self.config
        from servecast.predictors.kernel_latency.mlp import fit_mlp, merge_mlps, widen_input

        members, member_views = [], []
        n_members = max(int(cfg.get("ensemble", 1)), 1)
        # each member its own random rows: max_rows of them, or 1/n of the data when unset
        # (the ensemble then costs about what one member on all rows did)
        per_member = cfg["max_rows"] or -(-len(y) // n_members)
        seeds = [cfg["seed"] + j for j in range(n_members)]  # member j of every view: same rows
        keeps = [np.random.default_rng(seed).choice(len(y), per_member, False)
                 if len(y) > per_member else slice(None) for seed in seeds]
        for view in cfg.get("views", ["spec"]):
            cols = view_columns(view, Xs.shape[1])
            for seed, keep in zip(seeds, keeps, strict=True):
                w = fit_mlp(Xs[keep][:, cols], y[keep],
                            hidden=cfg["hidden"], layers=cfg["layers"], epochs=cfg["epochs"],
                            batch_size=cfg["batch_size"], lr=cfg["lr"], seed=seed,
                            **self.trainer_kw)
                members.append(widen_input(w, cols, Xs.shape[1]))
                member_views.append(view)
        self.weights = merge_mlps(members, view_weights(member_views, cfg["shape_weight"]))
        self.card = {
            "data": {"rows": int(len(rows.ops)), "ops": sorted(set(rows.ops)),
                     "devices": sorted(set(rows.devices.tolist()))},
            "target": "log(latency_ms / roofline_ms), L1 loss; ensemble members of each "
                      "view averaged in log space (merged into one block-diagonal MLP)",
        }
        return self

    def predict(self, frame) -> pl.DataFrame:
        """frame[latency_ms]: latency in ms per row of `frame` (aligned with its rows)."""
        return pl.DataFrame({"latency_ms": self._latency(frame)})

    def _latency(self, frame) -> np.ndarray:
        self.check_fitted()
        _, X, base = self._design(frame, need_latency=False)
        mlp = MergedMLP(self.weights, member_count(self.config))
        return base * np.exp(mlp(standardize(X, self.mean, self.std)))

    @staticmethod
    def predict_roofline(frame, devices: Mapping[str, Mapping]) -> np.ndarray:
        """The physics-only baseline (ms): max(FLOPs/peak, bytes/bandwidth) + launch floor, at
        the data-sheet peaks (no power limit)."""
        rows = kernel_rows(frame, devices)
        return baseline_ms(kernel_work(rows.ops, rows.shape), rows.spec)

    def evaluate(self, frame, target=None) -> dict:
        """MdAPE (%) overall and per op, with the roofline baseline's beside it."""
        if target is not None:
            raise InvalidInputError("the target is the frame's latency_ms column; pass "
                                    "target=None")
        rows = kernel_rows(frame, self.devices, need_latency=True)
        pred = self._latency(frame)
        roof = self.predict_roofline(frame, self.devices)
        true = rows.latency_ms
        out = {"rows": int(len(true)), "mdape": mdape(pred, true),
               "roofline_mdape": mdape(roof, true), "per_op": {}}
        for op in sorted(set(rows.ops)):
            m = rows.ops == op
            out["per_op"][op] = {"rows": int(m.sum()), "mdape": mdape(pred[m], true[m]),
                                 "roofline_mdape": mdape(roof[m], true[m])}
        return out

    # -- persistence ------------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
        np.savez(path / "weights.npz", mean=self.mean, std=self.std, **arrays)
        from servecast.predictors.kernel_latency.physics import FEATURE_SET

        cfg = self.config | {"feature_set": FEATURE_SET}
        (path / "config.json").write_text(json.dumps(cfg, indent=2))

    @classmethod
    def _load(cls, path: Path, card: dict) -> KernelLatencyPredictor:
        from servecast.predictors.kernel_latency.runtime import check_feature_set

        check_feature_set(json.loads((path / "config.json").read_text()), path)
        model = cls.from_params(path, card["params"])
        with np.load(path / "weights.npz") as z:
            model.mean, model.std = z["mean"], z["std"]
            model.weights = [z[f"w{i}"] for i in range(len(z.files) - 2)]
        return model
