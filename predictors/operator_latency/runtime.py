"""Operator-latency runtime: numpy only (no duckdb, polars, lightgbm, torch, lightning).

`Runtime.load(dir)` reads the residuals of a saved `operator_latency` model (the `step_time`
runtime extends it). `physics_rows(columns)` computes the physics time, the roofline and the
residual features of a frame's rows (the one implementation the predictor and the runtime
share); `predict(frame)` returns the predictor's columns; the single call
`operator_latency(op, gpu, **shape)` is what a scheduler asks. Latencies in ms.

Residual features (`residual_features`): the `physics.features` columns, then the raw shape
(`RAW_SHAPE`, log1p each) from column `physics.N_FEATURES` on (`SHAPE_COLUMNS`), then the
shape's products as the attention kernel sees them (`CROSS`, log1p each; `CROSS_COLUMNS`),
then those a GEMM's grid and traffic follow (`GEMM_CROSS`; `GEMM_CROSS_COLUMNS`).
One op's `Residual` is a forest over its columns of them, optionally averaged with a forest
over shape columns alone (the "shape view": aiconfigurator times the same shape grid on
every GPU, so a shape's log(measured / physics) carries over from GPU to GPU), and that
optionally blended with an MLP (`MLPMember`: smooth in the features where trees are steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from servecast import gpus
from servecast.errors import InvalidInputError, UnknownNameError
from servecast.predictors.kernel_latency.runtime import MergedMLP, standardize
from servecast.predictors.operator_latency import physics
from servecast.predictors.output_length.forest import Forest

#: shape columns of an operator frame (missing ones take their `physics.work` default)
SHAPE = ["M", "N", "K", "B", "H", "kv_heads", "head_dim", "tp"]
#: columns an operator frame must have
NEED = ["device", "op", "dtype", "kv_dtype", *SHAPE]
#: shape columns the residual may read raw, as log1p (`residual_features`), after the
#: `physics.features` columns
RAW_SHAPE = SHAPE[:7]
SHAPE_COLUMNS = list(range(physics.N_FEATURES, physics.N_FEATURES + len(RAW_SHAPE)))
#: products of the shape a kernel's grid and traffic follow (log1p each, after the raw
#: shape): the context a decode token attends to (N + M), sequences x KV heads (thread
#: blocks), the GQA group H / kv_heads, sequences x query heads, the KV elements read and
#: the tokens held; a forest splits on one column at a time, so it needs them spelled out
CROSS = ["context", "B_kv", "gqa", "B_H", "kv_elems", "B_context"]
CROSS_COLUMNS = list(range(SHAPE_COLUMNS[-1] + 1, SHAPE_COLUMNS[-1] + 1 + len(CROSS)))
#: products of a GEMM's shape (log1p each, after `CROSS`): the output elements M x N, the
#: weight elements N x K, the multiply-adds M x N x K, the 128 x 128 output tiles (the
#: grid a tensor-core kernel launches) and the depth per output column K / N
GEMM_CROSS = ["MN", "NK", "MNK", "tiles128", "K_over_N"]
GEMM_CROSS_COLUMNS = list(range(CROSS_COLUMNS[-1] + 1, CROSS_COLUMNS[-1] + 1 + len(GEMM_CROSS)))
#: optional column: 1 where a GEMM was timed on weights left warm in the L2 by its previous
#: repetition (a benchmark's loop; `physics.gemm_mem_ms`), 0 or absent for a serving step
WARM = "warm_l2"


def forest_key(op: str, dtype: str) -> str:
    """One residual per op, and per dtype for GEMMs (fp8 kernels run at about half their
    datasheet peak, bf16 ones near it)."""
    return f"gemm/{dtype}" if op == "gemm" else op


def check_op(op: str, dtype: str, kv_dtype: str) -> None:
    """UnknownNameError / InvalidInputError naming the known ops and dtypes."""
    if op not in physics.OPS:
        raise UnknownNameError(f"unknown op {op!r}; known ops: {', '.join(physics.OPS)}")
    if dtype not in physics.PEAK_KEY or kv_dtype not in physics.BYTES:
        raise InvalidInputError(f"{op}: unknown dtype {dtype!r} / {kv_dtype!r}; known: "
                                f"{', '.join(physics.PEAK_KEY)}")


def residual_features(X: np.ndarray, shape: dict) -> np.ndarray:
    """`physics.features`' matrix X (n, N_FEATURES) with the `RAW_SHAPE`, the `CROSS` then
    the `GEMM_CROSS` columns appended as log1p (shape arguments broadcast to n rows;
    missing ones take `_DEFAULTS`)."""
    raw = [np.broadcast_to(np.asarray(shape.get(c, _DEFAULTS[c]), dtype=np.float64), len(X))
           for c in RAW_SHAPE]
    M, N, K, B, H, kv, hd = raw
    context = N + M
    cross = [context, B * kv, H / np.maximum(kv, 1.0), B * H, B * kv * context * hd,
             B * context]
    cross += [M * N, N * K, M * N * K, np.ceil(M / physics.TILE) * np.ceil(N / physics.TILE),
              K / np.maximum(N, 1.0)]
    return np.column_stack([X, *(np.log1p(v) for v in raw + cross)])


class MLPMember:
    """An MLP over the `columns` of `residual_features` (`weights` [W0, b0, W1, b1, ...],
    W: (in, out), SiLU between layers: `kernel_latency.mlp.ResidualMLP`'s numpy export),
    reading them standardized by `mean` / `std` (per column, in `residual_features`'
    units: log ms, log1p shape, ratios) and, where `bounds` (lo, hi) are given, clipped to
    them (the standardized training range: the MLP then levels off outside it, as a tree
    does, instead of extrapolating); `weight` in [0, 1] is its share of the residual."""

    FILE = "mlp.npz"

    def __init__(self, weights: list[np.ndarray], columns: list[int], mean: np.ndarray,
                 std: np.ndarray, weight: float, bounds: tuple | None = None):
        self.weights, self.columns, self.weight = list(weights), list(columns), float(weight)
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.bounds = None if bounds is None else tuple(np.asarray(b, np.float64)
                                                        for b in bounds)
        self.net = MergedMLP(self.weights, 1)

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """The MLP's input of the rows of `X` (`residual_features`): its columns
        standardized, clipped to `bounds` where given."""
        Z = standardize(X[:, self.columns], self.mean, self.std)
        return Z if self.bounds is None else np.clip(Z, *self.bounds)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The MLP's residual (n,) of the rows of `X` (`residual_features`)."""
        return self.net(self.standardize(X))

    def save(self, folder: Path) -> None:
        """Write `FILE` (the weights as w0, w1, ..., mean, std and the bounds as lo, hi
        where given) into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        bounds = {} if self.bounds is None else dict(zip(("lo", "hi"), self.bounds,
                                                         strict=True))
        np.savez(folder / self.FILE, mean=self.mean, std=self.std, **bounds,
                 **{f"w{i}": w for i, w in enumerate(self.weights)})

    @classmethod
    def load(cls, folder: Path, columns: list[int], weight: float) -> MLPMember:
        """The member `save` wrote into `folder`."""
        with np.load(folder / cls.FILE) as npz:
            weights = [npz[f"w{i}"] for i in range(sum(f[0] == "w" for f in npz.files))]
            bounds = (npz["lo"], npz["hi"]) if "lo" in npz.files else None
            return cls(weights, columns, npz["mean"], npz["std"], weight, bounds)


class Residual:
    """One op's learned log(measured / physics): `forest` over the `columns` of
    `residual_features`, and where `shape` is given, (1 - shape_weight) x that +
    shape_weight x `shape` over `shape_columns` (shape columns only: no device feature);
    where `mlp` is given, (1 - mlp.weight) x all that + mlp.weight x the MLP's; all of it
    times `scale` in [0, 1] (a shrink toward the physics; 1: none). `forest` is None where
    the shape view takes all the weight (shape_weight 1)."""

    def __init__(self, forest: Forest | None, columns: list[int], shape: Forest | None = None,
                 shape_weight: float = 0.0, shape_columns: list[int] | None = None,
                 mlp: MLPMember | None = None, scale: float = 1.0):
        self.forest, self.columns = forest, list(columns)
        self.shape, self.shape_weight = shape, float(shape_weight if shape else 0.0)
        self.shape_columns = list(SHAPE_COLUMNS if shape_columns is None else shape_columns)
        self.mlp, self.scale = mlp, float(scale)
        if forest is None and self.shape_weight != 1.0:
            raise ValueError("a residual without its view forest needs shape_weight 1")

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The residual (n,) of the rows of `X` (`residual_features`)."""
        w = self.shape_weight
        r = 0.0 if w == 1.0 else self.forest.predict(X[:, self.columns])[:, 0]
        if self.shape is not None:
            r = (1.0 - w) * r + w * self.shape.predict(X[:, self.shape_columns])[:, 0]
        if self.mlp is not None:
            r = (1.0 - self.mlp.weight) * r + self.mlp.weight * self.mlp.predict(X)
        return self.scale * r

    def meta(self) -> dict:
        """What `save` writes of it beside the forests (and the MLP's file)."""
        mlp = {"mlp_weight": self.mlp.weight, "mlp_columns": self.mlp.columns} if self.mlp \
            else {}
        return {"columns": self.columns, "shape_weight": self.shape_weight,
                "shape_columns": self.shape_columns, "scale": self.scale} | mlp


class Runtime:
    """The fitted residuals (one `Residual` per `forest_key`), the default feature columns
    and the spec sheets saved with the model (device name -> spec; others resolved from the
    catalog or a spec file)."""

    kind = "operator_latency"

    def __init__(self, forests: dict[str, Residual], columns: list[int],
                 specs: dict | None = None):
        self.forests, self.columns, self.specs = forests, list(columns), dict(specs or {})

    @classmethod
    def load(cls, path: str | Path) -> Runtime:
        from servecast.predictors.base import read_card

        path = Path(path)
        card = read_card(path, cls.kind)
        parts = load_parts(path)
        return cls._from_parts(parts, card)

    @classmethod
    def _from_parts(cls, parts: Runtime, card: dict) -> Runtime:
        return cls(parts.forests, parts.columns, parts.specs)

    def spec(self, device, extra: dict | None = None) -> dict:
        """The spec of `device`: in `extra`, saved with the model, else resolved (catalog
        name or spec file)."""
        for specs in (extra or {}, self.specs):
            if isinstance(device, str) and device in specs:
                return specs[device]
        return gpus.resolve_spec(device)

    def op_ms(self, op: str, spec: dict, **shape) -> np.ndarray:
        """Predicted ms of `op` (physics x exp(residual)) for broadcast shape arrays."""
        t, X = physics.features(op, spec, **shape)
        residual = self.forests.get(forest_key(op, shape.get("dtype", "bf16")))
        if residual is None:
            return t
        return t * np.exp(residual.predict(residual_features(X, shape)))

    def physics_rows(self, frame, specs: dict | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(physics ms, roofline ms, `residual_features`) row-aligned with `frame` (any
        mapping of column name -> sequence with the NEED columns); `specs`: extra device
        specs."""
        missing = [c for c in NEED if c not in frame]
        if missing:
            raise InvalidInputError(f"operator frame lacks column(s) {', '.join(missing)}")
        keys = [np.asarray(frame[c], dtype=object) for c in NEED[:4]]
        shape = {c: np.asarray(frame[c], dtype=np.float64) for c in SHAPE}
        n = len(keys[0])
        warm = np.asarray(frame[WARM], dtype=np.float64) if WARM in frame else np.zeros(n)
        t, roof = np.empty(n), np.empty(n)
        X = np.empty((n, physics.N_FEATURES))
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(*keys, strict=True)):
            groups.setdefault(key, []).append(i)
        for (dev, op, dt, kvdt), rows in groups.items():
            check_op(op, dt, kvdt)
            spec = self.spec(dev, specs)
            need = physics.NEEDS[op] + ([physics.PEAK_KEY[dt]] if op == "gemm" else [])
            gpus.require(spec, need, f"{dt} {op}")
            part = {c: v[rows] for c, v in shape.items()}
            extra = {WARM: warm[rows]} if op == "gemm" else {}
            t[rows], X[rows] = physics.features(op, spec, dtype=dt, kv_dtype=kvdt, **part,
                                                **extra)
            roof[rows] = physics.roofline(op, spec, dtype=dt, kv_dtype=kvdt, **part)
        return t, roof, residual_features(X, shape)

    def predict_rows(self, frame, specs: dict | None = None) -> dict[str, np.ndarray]:
        """`latency_ms_pred`, `physics_ms` and `roofline_ms` (row-aligned with `frame`)."""
        t, roof, X = self.physics_rows(frame, specs)
        keys = np.array([forest_key(o, d) for o, d in zip(frame["op"], frame["dtype"],
                                                          strict=True)])
        pred = t.copy()
        for key in dict.fromkeys(keys.tolist()):
            if key not in self.forests:
                raise InvalidInputError(f"the model was not fitted on {key!r} (fitted: "
                                        f"{', '.join(self.forests)})")
            m = keys == key
            pred[m] = t[m] * np.exp(self.forests[key].predict(X[m]))
        return {"latency_ms_pred": pred, "physics_ms": t, "roofline_ms": roof}

    def predict(self, frame) -> dict[str, np.ndarray]:
        """The Runtime protocol's batch form: the predictor's prediction columns."""
        return self.predict_rows(frame)

    def operator_latency(self, op: str, gpu, dtype: str = "bf16", kv_dtype: str = "bf16",
                         **shape) -> float:
        """ms of one `op` call of `shape` (M, N, K, B, H, kv_heads, head_dim, tp) on `gpu`
        (catalog name, spec file or spec mapping)."""
        unknown = sorted(set(shape) - set(SHAPE))
        if unknown:
            raise InvalidInputError(f"unknown shape argument(s) {', '.join(unknown)}; known: "
                                    f"{', '.join(SHAPE)}")
        name = gpu if isinstance(gpu, str) else "<spec>"
        extra = None if isinstance(gpu, str) else {name: gpus.resolve_spec(gpu)}
        frame = {"device": [name], "op": [op], "dtype": [dtype], "kv_dtype": [kv_dtype]}
        frame |= {c: [shape.get(c, _DEFAULTS[c])] for c in SHAPE}
        return float(self.predict_rows(frame, extra)["latency_ms_pred"][0])


#: shape defaults of a single call (as in `physics.work`)
_DEFAULTS = {"M": 0, "N": 0, "K": 0, "B": 1, "H": 1, "kv_heads": 1, "head_dim": 128, "tp": 1}


def save(path: Path, forests: dict[str, Residual], view_columns: list[int], view: str,
         specs: dict) -> None:
    """Write the residuals' forests (one folder each; a shape view under `shape/<key>`,
    an MLP member under `mlp/<key>`) and `operator_latency.json` into `path`."""
    for key, residual in forests.items():
        for folder, forest in ((key, residual.forest), (f"shape/{key}", residual.shape)):
            if forest is not None:
                (path / folder).mkdir(parents=True, exist_ok=True)
                forest.save(path / folder)
        if residual.mlp is not None:
            residual.mlp.save(path / "mlp" / key)
    (path / "operator_latency.json").write_text(json.dumps(
        {"view": view, "columns": view_columns, "ops": sorted(forests), "specs": specs,
         "residuals": {key: r.meta() for key, r in forests.items()}}))


def load_parts(path: Path) -> Runtime:
    """The forests, feature columns and specs a model dir holds (any kind that saved them
    with `save`); ModelVersionError naming the file when `operator_latency.json` is bad."""
    from servecast.errors import ModelVersionError
    from servecast.predictors.base import check_keys, read_json

    file = path / "operator_latency.json"
    meta = read_json(file, {"ops": list, "columns": list, "specs": dict})
    forests = {}
    for op in meta["ops"]:
        # a model saved before per-op residual settings: every op on the view's columns
        cfg = {"columns": meta["columns"], "shape_weight": 0.0}
        if "residuals" in meta:
            cfg = check_keys(meta, file, {f"residuals.{op}.columns": list,
                                          f"residuals.{op}.shape_weight": (int, float)}
                             )["residuals"][op]
        if "shape_columns" in cfg:
            check_keys(meta, file, {f"residuals.{op}.shape_columns": list})
        if "mlp_weight" in cfg:
            check_keys(meta, file, {f"residuals.{op}.mlp_weight": (int, float),
                                    f"residuals.{op}.mlp_columns": list})
        if "scale" in cfg:
            check_keys(meta, file, {f"residuals.{op}.scale": (int, float)})
        for name, default in (("shape_weight", 0.0), ("mlp_weight", 0.0), ("scale", 1.0)):
            if not 0.0 <= cfg.get(name, default) <= 1.0:
                raise ModelVersionError(f"{file}: residuals.{op}.{name}={cfg[name]!r} is not "
                                        "in [0, 1]; retrain the model")
        weight = cfg["shape_weight"]
        shape = Forest.load(path / "shape" / op) if weight else None
        mlp = MLPMember.load(path / "mlp" / op, cfg["mlp_columns"], cfg["mlp_weight"]
                             ) if cfg.get("mlp_weight") else None
        # a model saved before `shape_columns` (`scale`): the shape view read the raw shape
        # alone (the residual was not shrunk)
        view = None if weight == 1.0 else Forest.load(path / op)
        forests[op] = Residual(view, cfg["columns"], shape, weight,
                               cfg.get("shape_columns"), mlp, cfg.get("scale", 1.0))
    return Runtime(forests, meta["columns"], meta["specs"])
