"""The Estimator's kernel-latency runtime: numpy only (no torch, no Lightning, no DuckDB).

`Runtime.load(model_dir).kernel_latency(op, shape, device_spec)` -> ms in ~tens of µs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from servecast.predictors.kernel_latency.ops import OPS, SHAPE_COLUMNS, canonical_op, shape_dict
from servecast.predictors.kernel_latency.specs import SPEC_COLUMNS, SPEC_KEYS, check_spec

#: op spellings already resolved by `canonical_op` (only valid names are cached)
_OP_CACHE: dict[str, str] = {}
_INF = float("inf")


def _quick_dims(name: str, shape) -> dict[str, float] | None:
    """`shape_dict` for the common case (a list/tuple of all the op's dims, every one a
    finite number > 0); None otherwise, so the caller falls back to the checked path."""
    cols = OPS[name][1]
    if type(shape) not in (list, tuple) or len(shape) != len(cols):
        return None
    try:
        vals = [float(v) for v in shape]
    except (TypeError, ValueError):
        return None
    for v in vals:
        if not 0.0 < v < _INF:
            return None
    return dict(zip(cols, vals, strict=True))


def check_feature_set(cfg: dict, path) -> None:
    """Raise ModelVersionError unless the model at `path` uses this code's feature layout."""
    from servecast.errors import ModelVersionError
    from servecast.predictors.kernel_latency.physics import FEATURE_SET

    if cfg.get("feature_set", 1) != FEATURE_SET:
        raise ModelVersionError(
            f"{path}: kernel-latency model built on feature set {cfg.get('feature_set', 1)}, "
            f"this servecast computes set {FEATURE_SET}; retrain it with "
            "`servecast train kernel-latency`")


def clean_std(std: np.ndarray) -> np.ndarray:
    """Feature std as float64 with the columns that were constant in training (std at the
    1e-6 guard) set to inf: they standardize to 0, so a value never seen in training (an op
    absent from the training data, a new spec) cannot blow the first layer up."""
    std = np.asarray(std, dtype=np.float64)
    return np.where(std > 2e-6, std, np.inf)


def column_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-column (mean, std) of training features `X` (rows, n) that `standardize`
    reads: the std carries the 1e-6 guard, so a column constant in training sits at the
    guard and `clean_std` recognises it."""
    return X.mean(0), X.std(0) + 1e-6


def standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Features `X` (rows, n) standardized per column: (X - mean) / `clean_std`(std), float64,
    shape (rows, n); `mean` and `std` are (n,) in `X`'s units. A column whose std is not
    above the 1e-6 guard (zero, tiny, negative or NaN) reads 0 for every finite value; an
    already cleaned std (inf there) gives the same bits, so a runtime may clean it once."""
    return (X - mean) / clean_std(std)


def member_blocks(weights: list[np.ndarray], members: int) -> list[tuple] | None:
    """The layers after the first of a merged ensemble (`mlp.merge_mlps`) as per-member
    blocks, [(W (members, h, h), b (members, 1, h)), ..., (W_last (members, h, 1),
    b_last / members)] (the members' outputs sum to the merged one); None where the hidden
    layers are not block-diagonal over `members` (members=1 always works: one dense block).
    A row then costs members x h^2 multiply-adds per hidden layer instead of (members x h)^2."""
    width = weights[1].shape[0]
    if width % members:
        return None
    h = width // members
    idx = np.arange(members)
    out = []
    for i in range(2, len(weights), 2):
        w, b = weights[i].astype(np.float64), weights[i + 1].astype(np.float64)
        if i + 2 < len(weights):
            blocks = w.reshape(members, h, members, h)[idx, :, idx, :]
            if np.count_nonzero(w) != np.count_nonzero(blocks):
                return None
            out.append((np.ascontiguousarray(blocks), b.reshape(members, 1, h)))
        else:
            out.append((np.ascontiguousarray(w.reshape(members, h, 1)), float(b[0]) / members))
    return out


def blocks_forward(h: np.ndarray, blocks: list[tuple]) -> np.ndarray:
    """First-layer pre-activations (rows, members x h) through `member_blocks` -> (rows,)."""
    h = h.reshape(len(h), len(blocks[0][0]), -1).transpose(1, 0, 2)
    for w, b in blocks:
        h = h / (1.0 + np.exp(-h))
        h = h @ w + b
    return h.sum(axis=0)[:, 0]


def member_count(cfg: dict) -> int:
    """Members merged into a saved model's MLP: `ensemble` per view (config.json)."""
    return int(cfg.get("ensemble", 1)) * len(cfg.get("views", ["spec"]))


class MergedMLP:
    """Forward pass of the predictor's merged ensemble (SiLU hidden layers): the first layer
    dense, the others per member block (`member_blocks`; one dense block where the hidden
    layers are not block-diagonal over `members`)."""

    def __init__(self, weights: list[np.ndarray], members: int):
        self.weights = [w.astype(np.float64) for w in weights]
        self.blocks = member_blocks(self.weights, members) or member_blocks(self.weights, 1)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Standardized features (rows, n) -> one value per row."""
        return blocks_forward(X @ self.weights[0] + self.weights[1], self.blocks)


def spec_feature_slice(n_features: int) -> slice:
    """Column range of the raw spec features inside `physics.features`' matrix."""
    from servecast.predictors.kernel_latency.ops import FAMILIES, OP_NAMES

    end = n_features - len(OP_NAMES) - len(FAMILIES)
    return slice(end - len(SPEC_KEYS), end)


class Runtime:
    """A loaded kernel-latency model (weights.npz + config.json written by the predictor);
    `devices` are the spec sheets it was built with (the batch `predict` reads them)."""

    kind = "kernel_latency"

    def __init__(self, weights: list[np.ndarray], mean: np.ndarray, std: np.ndarray,
                 use_spec_features: bool, members: int = 1,
                 devices: Mapping[str, Mapping] | None = None):
        self.devices = dict(devices or {})
        self.mlp = MergedMLP(weights, members)
        self.mean, self.std = mean.astype(np.float64), clean_std(std)
        self.use_spec = use_spec_features
        self._keep: np.ndarray | None = None  # feature columns the MLP reads
        self._fast: tuple | None = None  # (W0 of the dense columns, per-op first-layer bias)
        self._specs: dict[tuple, tuple] = {}  # raw spec values -> (checked row, spec bias)

    @classmethod
    def load(cls, path: str | Path) -> Runtime:
        from servecast.predictors.base import read_card, read_json

        path = Path(path)
        card = read_card(path, "kernel_latency")
        cfg = read_json(path / "config.json")
        check_feature_set(cfg, path)
        with np.load(path / "weights.npz") as z:
            weights = [z[f"w{i}"] for i in range(len(z.files) - 2)]
            return cls(weights, z["mean"], z["std"], bool(cfg.get("use_spec_features")),
                       member_count(cfg), card["params"].get("devices"))

    def _predict(self, ops: np.ndarray, shape: dict, spec: np.ndarray) -> np.ndarray:
        from servecast.predictors.kernel_latency.physics import features

        X, base = features(ops, shape, spec)
        if self._keep is None:
            keep = np.arange(X.shape[1])
            if not self.use_spec:
                keep = np.delete(keep, spec_feature_slice(X.shape[1]))
            self._keep = keep
        return base * np.exp(self.mlp(standardize(X[:, self._keep], self.mean, self.std)))

    @staticmethod
    def _spec_row(device_spec: Mapping) -> np.ndarray:
        checked = check_spec(device_spec)
        return np.array([[checked[k] for k in SPEC_COLUMNS]])

    def _prepare_fast(self) -> tuple:
        """Fold the standardization and the constant columns (op/family one-hots, spec logs)
        into the first layer: h0 = (dense - mean) @ W0d + bias[op] (+ spec term)."""
        from servecast.predictors.kernel_latency.ops import FAMILIES, OP_NAMES, OPS

        w0, b0 = self.mlp.weights[0], self.mlp.weights[1]
        n_full = len(self.mean) + (0 if self.use_spec else len(SPEC_KEYS))
        sl = spec_feature_slice(n_full)
        full = np.arange(n_full)
        keep = full if self.use_spec else np.delete(full, sl)
        scaled = np.zeros((n_full, w0.shape[1]))
        scaled[keep] = w0 / self.std[:, None]
        mean = np.zeros(n_full)
        mean[keep] = self.mean
        n_dense = sl.start
        # the non-dense columns' centring goes into the bias (float64, no cancellation);
        # dense columns are centred per call, before the (scaled) first layer
        bias = b0 - mean[n_dense:] @ scaled[n_dense:]
        onehot = n_full - len(OP_NAMES) - len(FAMILIES)
        per_op = {}
        for op, (fam, *_) in OPS.items():
            per_op[op] = (bias + scaled[onehot + OP_NAMES.index(op)]
                          + scaled[onehot + len(OP_NAMES) + FAMILIES.index(fam)])
        spec_w = scaled[sl] if self.use_spec else None
        self._fast = (np.ascontiguousarray(scaled[:n_dense]), per_op, spec_w,
                      mean[:n_dense].copy())
        return self._fast

    def _spec_entry(self, device_spec: Mapping) -> tuple:
        try:
            key = tuple(device_spec.get(k) for k in ["Device", *SPEC_COLUMNS])
            hit = self._specs.get(key)
        except (AttributeError, TypeError):  # not a mapping / unhashable values
            key, hit = None, None
        if hit is not None:
            return hit
        checked = check_spec(device_spec)
        row = tuple(checked[k] for k in SPEC_COLUMNS)
        fast = self._fast or self._prepare_fast()
        extra = None if fast[2] is None else np.log2(np.array(row[:len(SPEC_KEYS)])) @ fast[2]
        hit = (row, extra)
        if key is not None and len(self._specs) < 4096:
            self._specs[key] = hit
        return hit

    def kernel_latency(self, op: str, shape: Sequence[float] | Mapping[str, float],
                       device_spec: Mapping) -> float:
        """Latency (ms) of `op` with `shape` (values in `ops.shape_columns(op)` order, or a
        mapping) on the device described by `device_spec` (NeuSight spec keys).

        Scalar fast path: features in plain Python floats, a numpy forward pass with the
        standardization and one-hot columns folded into the first layer, spec rows cached."""
        from servecast.predictors.kernel_latency.physics import features_one

        name = _OP_CACHE.get(op) if isinstance(op, str) else None
        if name is None:
            name = canonical_op(op)
            if isinstance(op, str) and len(_OP_CACHE) < 1024:
                _OP_CACHE[op] = name
        dims = _quick_dims(name, shape)
        if dims is None:  # other forms, or a bad value: the checked path (clear errors)
            dims = shape_dict(name, shape)
        row, extra = self._spec_entry(device_spec)
        w0, per_op, _, mean = self._fast or self._prepare_fast()
        cols, base = features_one(name, dims, row)
        h = (np.array(cols, dtype=np.float32) - mean) @ w0 + per_op[name]
        if extra is not None:
            h += extra
        return float(base * np.exp(blocks_forward(h[None], self.mlp.blocks)[0]))

    def roofline(self, op: str, shape: Sequence[float] | Mapping[str, float],
                 device_spec: Mapping) -> float:
        """The physics-only (roofline at the data-sheet peaks + launch floor) latency in ms,
        for comparison."""
        from servecast.predictors.kernel_latency.physics import baseline_ms, kernel_work

        name = canonical_op(op)
        dims = shape_dict(name, shape)
        cols = {c: np.array([dims[c]]) for c in OPS[name][1]}
        work = kernel_work(np.array([name], dtype=object), cols)
        return float(baseline_ms(work, self._spec_row(device_spec))[0])

    def predict(self, frame) -> dict[str, np.ndarray]:
        """{"latency_ms": ms per row} of frame[op, device, shape columns], devices from the
        model's spec sheets (the Runtime protocol; `kernel_latency_batch` takes others)."""
        return {"latency_ms": self.kernel_latency_batch(frame, self.devices)}

    def kernel_latency_batch(self, frame, devices: Mapping[str, Mapping]) -> np.ndarray:
        """Latency (ms) per row of frame[op, device, shape columns]."""
        from servecast.predictors.kernel_latency.frames import kernel_rows

        rows = kernel_rows(frame, devices)
        return self._predict(rows.ops, {c: rows.shape[c] for c in SHAPE_COLUMNS}, rows.spec)
