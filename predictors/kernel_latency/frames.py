"""Checked numpy views of a kernel frame: canonical ops, shape arrays, spec rows, targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.frames import to_polars
from servecast.predictors.kernel_latency.ops import OPS, SHAPE_COLUMNS, canonical_op
from servecast.predictors.kernel_latency.specs import spec_matrix


@dataclass
class KernelRows:
    """`ops` canonical names, `shape` column -> float array (NaN where unused), `spec` rows in
    SPEC_KEYS order, `latency_ms` (None unless required)."""

    ops: np.ndarray
    shape: dict[str, np.ndarray]
    spec: np.ndarray
    devices: np.ndarray
    latency_ms: np.ndarray | None


def kernel_rows(frame, devices: Mapping[str, Mapping], need_latency: bool = False) -> KernelRows:
    """Validate `frame` (columns op, device, the ops' shape columns[, latency_ms]) and return
    its arrays. Raises InvalidInputError naming the column and the first bad row."""
    df = to_polars(frame)
    need = ["op", "device"] + (["latency_ms"] if need_latency else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InvalidInputError(f"frame lacks column(s) {', '.join(missing)}")
    if df.height == 0:
        raise InvalidInputError("frame has no rows")
    raw_ops = df["op"].cast(pl.Utf8).to_numpy()
    uniq, inv = np.unique(raw_ops.astype(str), return_inverse=True)
    canon = np.array([canonical_op(o) for o in uniq], dtype=object)
    ops = canon[inv]
    shape = {c: (df[c].cast(pl.Float64, strict=False).to_numpy().astype(float)
                 if c in df.columns else np.full(df.height, np.nan)) for c in SHAPE_COLUMNS}
    for op in set(canon):
        rows = np.flatnonzero(ops == op)
        for c in OPS[op][1]:
            if c not in df.columns and not (c == "B" and OPS[op][0] in ("gemm", "conv")):
                raise InvalidInputError(
                    f"frame lacks shape column {c!r} needed by op {op!r} "
                    f"(needs {', '.join(OPS[op][1])})")
            v = shape[c][rows]
            if c == "B" and c not in df.columns:
                continue
            bad = ~np.isfinite(v) | ((v < 0) if c == "padding" else (v <= 0))
            if bad.any():
                i = int(rows[np.argmax(bad)])
                raise InvalidInputError(
                    f"row {i}: op {op!r} needs {c} {'>= 0' if c == 'padding' else '> 0'}, "
                    f"got {df[c][i]!r} ({int(bad.sum())} such row(s))")
    names = df["device"].cast(pl.Utf8).to_numpy()
    spec = spec_matrix(devices, names)
    lat = None
    if need_latency:
        lat = df["latency_ms"].cast(pl.Float64).to_numpy().astype(float)
        bad = ~np.isfinite(lat) | (lat <= 0)
        if bad.any():
            raise InvalidInputError(
                f"row {int(np.argmax(bad))}: latency_ms must be > 0 ({int(bad.sum())} bad rows)")
    return KernelRows(ops, shape, spec, names, lat)
