"""Operator latency of LLM serving from a GPU spec sheet: physics x a learned residual.

`OperatorLatencyModel.fit(frame)` fits, per op, LightGBM on log(measured / physics) over the
device-relative physics features (`physics.features`); predict = physics x exp(residual).
Frames carry `device` (a catalog name, alias or a key of `specs`), `op`, `dtype`, `kv_dtype`
and the shape columns of `data.SHAPE`; `latency_ms` to fit or evaluate. No feature is a GPU
name: an unseen GPU is predicted from its spec alone. Trees are compiled to numpy bit masks
(`Forest`) for the runtime; LightGBM is only needed to fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from servecast import gpus
from servecast.errors import InvalidInputError, UnknownNameError
from servecast.predictors.base import Predictor
from servecast.predictors.operator_latency import physics
from servecast.predictors.operator_latency.data import SHAPE

#: feature views: "relative" = the physics times and dimensionless ratios (intensity over
#: the ridge point, wave efficiency, tiles per SM, bytes over L2); "spec" adds FLOPs, bytes
#: and the GPU's own log specs
VIEWS = {"relative": list(range(8)), "spec": list(range(physics.N_FEATURES))}
#: training rows per op drawn for the residual (more add fit time, not accuracy)
MAX_ROWS = 40_000


def forest_key(op: str, dtype: str) -> str:
    """One residual per op, and per dtype for GEMMs (fp8 kernels run at about half their
    datasheet peak, bf16 ones near it)."""
    return f"gemm/{dtype}" if op == "gemm" else op


def ape(pred, true) -> np.ndarray:
    """Absolute percentage errors (%)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return np.abs(pred - true) / true * 100.0


def scores(pred, true) -> dict[str, float]:
    """MdAPE and p90 APE (%) and the row count."""
    e = ape(pred, true)
    return {"mdape": float(np.median(e)), "p90": float(np.percentile(e, 90)), "rows": len(e)}


class OperatorLatencyModel(Predictor):
    kind = "operator_latency"

    def __init__(self, specs: dict | None = None, view: str = "relative", trees: int = 150,
                 leaves: int = 15, seed: int = 0):
        super().__init__()
        if view not in VIEWS:
            raise InvalidInputError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
        self.specs = {k: gpus.resolve_spec(v) for k, v in (specs or {}).items()}
        self.view, self.trees, self.leaves, self.seed = view, trees, leaves, seed
        self.forests: dict = {}

    # -- physics of a frame ----------------------------------------------------------------
    def spec(self, device: str) -> dict:
        if device not in self.specs:
            self.specs[device] = gpus.resolve_spec(device)
        return self.specs[device]

    def physics(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(physics ms, roofline ms, features) row-aligned with `frame`."""
        need = ["device", "op", "dtype", "kv_dtype", *SHAPE]
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise InvalidInputError(f"operator frame lacks column(s) {', '.join(missing)}")
        n = frame.height
        t, roof = np.empty(n), np.empty(n)
        X = np.empty((n, physics.N_FEATURES))
        idx = frame.with_row_index("_i")
        for (dev, op, dt, kvdt), part in idx.group_by(["device", "op", "dtype", "kv_dtype"]):
            if op not in physics.OPS:
                raise UnknownNameError(f"unknown op {op!r}; known ops: {', '.join(physics.OPS)}")
            if dt not in physics.PEAK_KEY or kvdt not in physics.BYTES:
                raise InvalidInputError(f"{op}: unknown dtype {dt!r} / {kvdt!r}; known: "
                                        f"{', '.join(physics.PEAK_KEY)}")
            spec = self.spec(dev)
            keys = physics.NEEDS[op] + ([physics.PEAK_KEY[dt]] if op == "gemm" else [])
            gpus.require(spec, keys, f"{dt} {op}")
            shape = {c: part[c].to_numpy() for c in SHAPE}
            rows = part["_i"].to_numpy()
            t[rows], X[rows] = physics.features(op, spec, dtype=dt, kv_dtype=kvdt, **shape)
            roof[rows] = physics.roofline(op, spec, dtype=dt, kv_dtype=kvdt, **shape)
        return t, roof, X

    # -- contract ----------------------------------------------------------------------------
    def fit(self, frame: pl.DataFrame) -> OperatorLatencyModel:
        import lightgbm as lgb

        from servecast.predictors.output_length.forest import Forest

        t, _roof, X = self.physics(frame)
        y = np.log(frame["latency_ms"].to_numpy()) - np.log(t)
        cols = VIEWS[self.view]
        ops = self._keys(frame)
        rng = np.random.default_rng(self.seed)
        self.forests = {}
        for op in sorted(set(ops)):
            rows = np.flatnonzero(ops == op)
            if len(rows) > MAX_ROWS:
                rows = np.sort(rng.choice(rows, MAX_ROWS, replace=False))
            # L1: the residual is the median log ratio, robust to a GPU's odd kernels
            booster = lgb.train(
                {"objective": "l1", "learning_rate": 0.05, "num_leaves": self.leaves,
                 "min_data_in_leaf": min(200, max(5, len(rows) // 20)),
                 "feature_fraction": 0.8, "seed": self.seed, "verbose": -1, "num_threads": 2},
                lgb.Dataset(X[rows][:, cols], y[rows]), num_boost_round=self.trees)
            self.forests[op] = Forest.from_boosters([booster], len(cols))
        self.card = {"view": self.view, "trees": self.trees, "leaves": self.leaves,
                     "devices": sorted(set(frame["device"].to_list())),
                     "rows": {op: int((ops == op).sum()) for op in self.forests}}
        return self

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with `latency_ms_pred`, `physics_ms` and `roofline_ms` (row-aligned)."""
        if not self.forests:
            raise InvalidInputError("the operator-latency model is not fitted; call fit() or "
                                    "load a saved one")
        t, roof, X = self.physics(frame)
        ops = self._keys(frame)
        pred = t.copy()
        for op in set(ops):
            if op not in self.forests:
                raise InvalidInputError(f"the model was not fitted on {op!r} (fitted: "
                                        f"{', '.join(self.forests)})")
            m = ops == op
            pred[m] = t[m] * np.exp(self.forests[op].predict(X[m][:, VIEWS[self.view]])[:, 0])
        return frame.with_columns(latency_ms_pred=pred, physics_ms=t, roofline_ms=roof)

    @staticmethod
    def _keys(frame: pl.DataFrame) -> np.ndarray:
        return np.array([forest_key(o, d) for o, d in zip(frame["op"].to_list(),
                                                          frame["dtype"].to_list(), strict=True)])

    def evaluate(self, frame: pl.DataFrame) -> dict:
        """MdAPE / p90 APE (%) per op and dtype: model and roofline-only."""
        out = self.predict(frame)
        res = {}
        for (op, dt), part in out.group_by(["op", "dtype"], maintain_order=True):
            true = part["latency_ms"].to_numpy()
            res[f"{op}/{dt}"] = {"model": scores(part["latency_ms_pred"], true),
                                 "roofline": scores(part["roofline_ms"], true)}
        return res

    def _save(self, path: Path) -> None:
        for op, forest in self.forests.items():
            (path / op).mkdir(parents=True, exist_ok=True)
            forest.save(path / op)
        (path / "operator_latency.json").write_text(json.dumps(
            {"view": self.view, "columns": VIEWS[self.view], "ops": sorted(self.forests),
             "specs": self.specs}))

    @classmethod
    def _load(cls, path: Path, card: dict) -> OperatorLatencyModel:
        from servecast.predictors.output_length.forest import Forest

        meta = json.loads((path / "operator_latency.json").read_text())
        model = cls(view=meta["view"])
        model.specs = meta["specs"]
        model.forests = {op: Forest.load(path / op) for op in meta["ops"]}
        return model
