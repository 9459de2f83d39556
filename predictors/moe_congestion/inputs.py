"""Checked numpy views of MoE routing inputs (numpy only: the runtime path uses them too).

`check_inputs` validates one layer's arrays; `frame_arrays` turns long columns [layer, batch,
expert, quality, (type, weight), (load)] into per-layer arrays.
"""

from __future__ import annotations

import numpy as np

from servecast.errors import InvalidInputError
from servecast.predictors.moe_congestion.equilibrium import as_batches, equilibrium
from servecast.predictors.moe_congestion.fitting import normalize_loads

FRAME_COLUMNS = ("layer", "batch", "expert", "quality")


def check_inputs(
    loads, quality, types=None, where: str = "input"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and shape one layer's arrays -> loads (B, E) shares, quality (B, K, E), w (B, K).

    loads: (E,) or (B, E) token counts or shares; quality: (E,), (B, E) or (B, K, E);
    types: None or type shares (B, K). Raises InvalidInputError naming the problem.
    """
    try:
        loads_arr = np.asarray(loads, dtype=float)
        q_arr = np.asarray(quality, dtype=float)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{where}: loads/quality must be numeric arrays ({e})") from None
    if loads_arr.ndim not in (1, 2) or loads_arr.shape[-1] < 2:
        raise InvalidInputError(
            f"{where}: loads must be (E,) or (batches, E) with E >= 2 experts, got shape "
            f"{loads_arr.shape}")
    if loads_arr.ndim == 1:
        loads_arr = loads_arr[None]
        if q_arr.ndim == 1:
            q_arr = q_arr[None]
        elif q_arr.ndim == 2 and types is not None:
            q_arr = q_arr[None]
    if not np.isfinite(loads_arr).all() or (loads_arr < 0).any():
        raise InvalidInputError(f"{where}: loads must be finite and >= 0 (token counts or shares)")
    if (loads_arr.sum(axis=1) <= 0).any():
        raise InvalidInputError(f"{where}: a batch has zero total load; drop empty batches")
    B, E = loads_arr.shape
    if q_arr.ndim == 2:
        q_arr = q_arr[:, None, :]
    if q_arr.ndim != 3 or q_arr.shape[0] != B or q_arr.shape[2] != E:
        raise InvalidInputError(
            f"{where}: quality shape {np.shape(quality)} does not match loads {np.shape(loads)}; "
            "expected (E,), (batches, E) or (batches, types, E)")
    if not np.isfinite(q_arr).all():
        raise InvalidInputError(f"{where}: quality has NaN/inf; fill missing types with 0 "
                                "and give them weight 0")
    K = q_arr.shape[1]
    if types is not None:
        w = np.asarray(types, dtype=float)
        if w.shape != (B, K) or not np.isfinite(w).all() or (w < 0).any():
            raise InvalidInputError(
                f"{where}: types must be type shares of shape (batches, types) = {(B, K)}, "
                f">= 0; got {w.shape}")
        if (w.sum(axis=1) <= 0).any():
            raise InvalidInputError(f"{where}: a batch has all type shares zero")
    elif K > 1:
        raise InvalidInputError(f"{where}: quality has {K} types; pass their shares as `types`")
    q, w = as_batches(q_arr, None if types is None else w)
    return normalize_loads(loads_arr), q, w


def frame_arrays(cols: dict[str, np.ndarray], with_loads: bool):
    """Long columns [layer, batch, expert, quality, (type, weight), (load)] -> per layer, in
    sorted layer order, (layer, quality (B, K, E), weights (B, K), batch ids, [loads (B, E)])."""
    need = set(FRAME_COLUMNS) | ({"load"} if with_loads else set())
    missing = need - set(cols)
    if missing:
        raise InvalidInputError(f"frame lacks column(s) {sorted(missing)}; expected "
                                "layer, batch, expert, quality (+ type, weight; load)")
    n = len(cols["layer"])
    if "type" not in cols:
        cols = dict(cols, type=np.zeros(n, np.int64), weight=np.ones(n))
    layers = np.asarray(cols["layer"])
    for layer in np.unique(layers):
        rows = layers == layer
        part = {c: np.asarray(v)[rows] for c, v in cols.items()}
        batches = np.unique(part["batch"])
        types = np.unique(part["type"])
        E = int(part["expert"].max()) + 1
        bi = np.searchsorted(batches, part["batch"])
        ki = np.searchsorted(types, part["type"])
        ei = part["expert"].astype(np.intp)
        q = np.zeros((len(batches), len(types), E))
        q[bi, ki, ei] = part["quality"]
        w = np.zeros((len(batches), len(types)))
        w[bi, ki] = part["weight"]
        item = (layer.item() if hasattr(layer, "item") else layer, q, w, batches)
        if with_loads:
            ld = np.zeros((len(batches), E))
            ld[bi, ei] = part["load"]  # repeated per type: same value
            item = item + (ld,)
        yield item


def predicted_loads(cols: dict[str, np.ndarray], params_of) -> np.ndarray:
    """Equilibrium load share of each row's (layer, batch, expert) of long columns (see
    `frame_arrays`), row-aligned; `params_of(layer)` gives that layer's (beta, gamma)."""
    out = np.full(len(cols["layer"]), np.nan)
    layers = np.asarray(cols["layer"])
    for layer, q, w, batches in frame_arrays(cols, with_loads=False):
        beta, gamma = params_of(layer)
        pred = equilibrium(*as_batches(q, w), beta, gamma)
        rows = np.flatnonzero(layers == layer)
        bi = np.searchsorted(batches, np.asarray(cols["batch"])[rows])
        out[rows] = pred[bi, np.asarray(cols["expert"])[rows].astype(np.intp)]
    return out
