"""Operator latency of LLM serving from a GPU spec sheet: physics x a learned residual.

`OperatorLatencyModel.fit(frame)` fits, per op, LightGBM on log(measured / physics) over the
device-relative physics features (`physics.features`), per `RESIDUALS` with the raw shape
beside them and / or averaged with a forest over the shape alone, and / or blended with a
Lightning MLP on the standardized features (`runtime.Residual`, `runtime.MLPMember`);
predict = physics x exp(residual).
Frames carry `device` (a catalog name, alias or a key of `specs`), `op`, `dtype`, `kv_dtype`
and the shape columns of `data.SHAPE`; `latency_ms` to fit or evaluate. No feature is a GPU
name: an unseen GPU is predicted from its spec alone. Trees are compiled to numpy bit masks
(`Forest`) for the runtime, an MLP member to numpy weights; LightGBM (torch and Lightning
for an MLP member) is only needed to fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from servecast import gpus
from servecast.errors import InvalidInputError
from servecast.predictors.base import Predictor
from servecast.predictors.kernel_latency.runtime import column_stats, standardize
from servecast.predictors.metrics import ape_scores
from servecast.predictors.operator_latency import physics
from servecast.predictors.operator_latency.runtime import (
    CROSS_COLUMNS,
    GEMM_CROSS_COLUMNS,
    SHAPE_COLUMNS,
    MLPMember,
    Residual,
    Runtime,
    forest_key,
    load_parts,
    save,
)

#: feature views: "relative" = the physics times and dimensionless ratios (intensity over
#: the ridge point, wave efficiency, tiles per SM, bytes over L2); "spec" adds FLOPs, bytes
#: and the GPU's own log specs
VIEWS = {"relative": [*range(8), 14], "spec": list(range(physics.N_FEATURES))}
#: training rows per op drawn for the residual (more add fit time, not accuracy)
MAX_ROWS = 40_000
#: LightGBM settings of one op's residual over the shared ones (`fit`); attention's are
#: chosen by the inner leave-one-GPU-out of benchmarks/attention_inner_logo.py
OP_PARAMS: dict[str, dict] = {}
#: per residual key (`forest_key`): `shape_features` adds the raw shape (`SHAPE_COLUMNS`)
#: to the view's columns; `shape_weight` w averages (1 - w) x that forest with w x a
#: forest over the shape alone fitted on the same rows (the "shape view"); `shape_cross`
#: gives the shape view the shape's products too (`CROSS_COLUMNS`) and `shape_fine` fits it
#: with `FINE_SHAPE_PARAMS` (the shape grid is discrete: a fine L2 forest can learn each
#: shape's mean log ratio, where the L1 default keeps coarse medians); `gemm_cross` gives
#: both forests, the view's and the shape view, a GEMM's products (`GEMM_CROSS_COLUMNS`).
#: `mlp_weight` w blends (1 - w) x those forests with w x an MLP (`MLP`, `mlp_hidden` wide)
#: on the view forest's columns, standardized (`mlp_shape`: and the shape view's;
#: `mlp_clip`: clipped to their training range, `runtime.MLPMember`); an MLP helps only
#: prefill attention, on the shape's columns, a quarter of the residual (docs/results.md
#: "An MLP member of the operator residual"). `scale` s in [0, 1] (default 1) multiplies
#: the whole log residual (forests and MLP) before exp: a shrink toward the physics; it
#: helps decode attention alone, whose residual is then its shape view alone (w 1): a new
#: GPU's decode kernels sit nearer the physics than the fitting GPUs' pooled ratio says
#: (docs/results.md "Decode attention's residual shrunk").
#: Chosen by the inner leave-one-GPU-out (benchmarks/gemm_inner_logo.py, attention_inner_logo.py
#: `--residual`); docs/results.md "Learned residual" section
#: LightGBM settings of a `shape_fine` shape view over the shared ones (`_forest`)
FINE_SHAPE_PARAMS = {"objective": "l2", "num_leaves": 63, "min_data_in_leaf": 5,
                     "learning_rate": 0.1}
#: the MLP member's training (`kernel_latency.mlp.fit_mlp_best`): hidden layers, their
#: default width, the most epochs, rows per batch, AdamW's learning rate and the share of
#: the fit rows held out to choose the epoch by (never a scored GPU's rows)
MLP = {"layers": 2, "hidden": 64, "epochs": 30, "batch_size": 256, "lr": 3e-3,
       "val_share": 0.1}
RESIDUALS: dict[str, dict] = {
    "gemm/bf16": {"shape_features": True},
    "gemm/fp8": {"shape_weight": 0.5},
    "attn_prefill": {"shape_weight": 0.5, "shape_cross": True, "shape_fine": True,
                     "mlp_weight": 0.25, "mlp_shape": True},
    "attn_decode": {"shape_weight": 1.0, "shape_cross": True, "shape_fine": True,
                    "scale": 0.8},
}


class OperatorLatencyModel(Predictor):
    """Operator latency = physics x exp(residual); `specs` maps extra device names to spec
    sheets (a mapping or a catalog name / spec file), saved with the model."""

    kind = "operator_latency"

    def __init__(self, specs: dict | None = None, view: str = "relative", trees: int = 150,
                 leaves: int = 15, seed: int = 0):
        super().__init__()
        if view not in VIEWS:
            raise InvalidInputError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
        self.view, self.trees, self.leaves, self.seed = view, trees, leaves, seed
        self.rt = Runtime({}, VIEWS[view], {k: gpus.resolve_spec(v)
                                            for k, v in (specs or {}).items()})

    @property
    def is_fitted(self) -> bool:
        return bool(self.rt.forests)

    @property
    def forests(self) -> dict:
        return self.rt.forests

    @property
    def specs(self) -> dict:
        """Device name -> spec sheet used by `predict` (saved with the model)."""
        return self.rt.specs

    def spec(self, device) -> dict:
        """The spec sheet `predict` uses for `device` (saved, catalog or spec file)."""
        return self.rt.spec(device)

    def physics(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(physics ms, roofline ms, features) row-aligned with `frame`."""
        return self.rt.physics_rows(frame)

    # -- contract ----------------------------------------------------------------------------
    def fit(self, frame: pl.DataFrame, target=None) -> OperatorLatencyModel:
        """Fit the residuals on an operator frame with `latency_ms` (`target` unused: the
        target is that column)."""
        if "latency_ms" not in frame.columns:
            raise InvalidInputError("operator frame lacks the target column latency_ms")
        t, _roof, X = self.physics(frame)
        y = np.log(frame["latency_ms"].to_numpy()) - np.log(t)
        ops = self._keys(frame)
        rng = np.random.default_rng(self.seed)
        forests, fits = {}, {}
        for op in sorted(set(ops.tolist())):
            rows = np.flatnonzero(ops == op)
            if len(rows) > MAX_ROWS:
                rows = np.sort(rng.choice(rows, MAX_ROWS, replace=False))
            cfg = RESIDUALS.get(op, {})
            gemm = GEMM_CROSS_COLUMNS if cfg.get("gemm_cross") else []
            cols = VIEWS[self.view] + (SHAPE_COLUMNS if cfg.get("shape_features") else []) + gemm
            weight = float(cfg.get("shape_weight", 0.0))
            forest = self._forest(op, X[rows][:, cols], y[rows]) if weight < 1 else None
            scols = SHAPE_COLUMNS + (CROSS_COLUMNS if cfg.get("shape_cross") else []) + gemm
            shape = self._forest(op, X[rows][:, scols], y[rows],
                                 FINE_SHAPE_PARAMS if cfg.get("shape_fine") else {}
                                 ) if weight else None
            mlp, fits[op] = self._mlp(X[rows], y[rows], cfg, cols, scols)
            forests[op] = Residual(forest, cols, shape, weight, scols, mlp,
                                   float(cfg.get("scale", 1.0)))
        self.rt.forests = forests
        self.card = {"view": self.view, "trees": self.trees, "leaves": self.leaves,
                     "devices": sorted(set(frame["device"].to_list())),
                     "rows": {op: int((ops == op).sum()) for op in forests},
                     "residuals": {op: r.meta() for op, r in forests.items()},
                     "mlp": {op: fit for op, fit in fits.items() if fit}}
        return self

    def _mlp(self, X: np.ndarray, y: np.ndarray, cfg: dict, cols: list[int],
             scols: list[int]) -> tuple[MLPMember | None, dict]:
        """The MLP member of one residual key's `RESIDUALS` settings `cfg` on its rows
        (X: `residual_features`, y: log(measured / physics)), or None where `mlp_weight` is
        0; and its epoch choice (`fit_mlp_best`: the epoch of least L1 on a `val_share` of
        these rows, drawn with the model's seed; {} without a member)."""
        weight = float(cfg.get("mlp_weight", 0.0))
        if not weight:
            return None, {}
        from servecast.predictors.kernel_latency.mlp import fit_mlp_best

        cols = list(dict.fromkeys(cols + (scols if cfg.get("mlp_shape") else [])))
        X = X[:, cols]
        mean, std = column_stats(X)
        Z = standardize(X, mean, std)
        bounds = (Z.min(0), Z.max(0)) if cfg.get("mlp_clip") else None
        val = np.random.default_rng(self.seed).random(len(y)) < MLP["val_share"]
        weights, fit = fit_mlp_best(
            Z[~val], y[~val], (Z[val], y[val]), hidden=int(cfg.get("mlp_hidden",
                                                                   MLP["hidden"])),
            layers=MLP["layers"], epochs=MLP["epochs"], batch_size=MLP["batch_size"],
            lr=MLP["lr"], seed=self.seed)
        return MLPMember(weights, cols, mean, std, weight, bounds), fit

    def _forest(self, op: str, X: np.ndarray, y: np.ndarray, extra: dict | None = None):
        """One LightGBM residual forest of `op` on (X, y) (`extra`: LightGBM settings over
        the op's), compiled to a `Forest`."""
        import lightgbm as lgb

        from servecast.predictors.output_length.forest import Forest

        # L1: the residual is the median log ratio, robust to a GPU's odd kernels
        params = {"objective": "l1", "learning_rate": 0.05, "num_leaves": self.leaves,
                  "min_data_in_leaf": min(200, max(5, len(y) // 20)),
                  "feature_fraction": 0.8, "seed": self.seed, "verbose": -1,
                  "num_threads": 2} | OP_PARAMS.get(op, {}) | (extra or {})
        booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=self.trees)
        return Forest.from_boosters([booster], X.shape[1])

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with `latency_ms_pred`, `physics_ms` and `roofline_ms` (row-aligned)."""
        self.check_fitted()
        return frame.with_columns(**self.rt.predict_rows(frame))

    @staticmethod
    def _keys(frame: pl.DataFrame) -> np.ndarray:
        return np.array([forest_key(o, d) for o, d in zip(frame["op"].to_list(),
                                                          frame["dtype"].to_list(), strict=True)])

    def evaluate(self, frame: pl.DataFrame, target=None) -> dict:
        """MdAPE / p90 APE (%) per op and dtype: model and roofline-only."""
        out = self.predict(frame)
        res = {}
        for (op, dt), part in out.group_by(["op", "dtype"], maintain_order=True):
            true = part["latency_ms"].to_numpy()
            res[f"{op}/{dt}"] = {"model": ape_scores(part["latency_ms_pred"], true),
                                 "roofline": ape_scores(part["roofline_ms"], true)}
        return res

    def _save(self, path: Path) -> None:
        save(path, self.rt.forests, VIEWS[self.view], self.view, self.rt.specs)

    @classmethod
    def _load(cls, path: Path, card: dict) -> OperatorLatencyModel:
        rt = load_parts(path)
        model = cls.from_params(path, card.get("params", {}))
        model.rt = Runtime(rt.forests, VIEWS[model.view], rt.specs)
        return model


