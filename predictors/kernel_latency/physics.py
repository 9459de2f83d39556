"""Physics of one kernel from its op, shape and the device's spec sheet (no measurements).

FLOPs and minimum DRAM bytes per kernel, roofline times (ms), wave quantization of output
tiles (or element blocks) over the SMs, working set vs L2. `features` turns them into the
input of the residual learner; `baseline_ms` is the physics-only baseline (data-sheet peaks).

The learner's roofline runs fp32 work at the power-limited sustained peak
(`sustained_fp32`): a 70-75 W card cannot hold its boost clock on every lane, so its big
GEMMs reach a smaller fraction of SingleFLOPs than a 250 W card's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from servecast.predictors.kernel_latency.ops import FAMILIES, OP_NAMES, OPS
from servecast.predictors.kernel_latency.specs import (
    POWER_KEY,
    SPEC_COLUMNS,
    SPEC_KEYS,
    TENSOR_KEY,
)

#: fixed launch + sync floor added to the roofline time (ms): kernels never run faster
LAUNCH_FLOOR_MS = 0.02
#: layout of the feature matrix; saved with a model, checked on load (2: saturating
#: device-relative time / L2 features instead of absolute log times; 3: fp32 work at the
#: power-limited sustained peak)
FEATURE_SET = 3
#: fp32 GFLOP/s a board sustains per watt of its TDP, and the exponent of the power budget
#: in the clock it allows (see `sustained_fp32`); picked by leave-one-GPU-out over NeuSight's
#: five training GPUs (docs/results.md), not fitted per GPU
POWER_GFLOPS_PER_W = 60.0
POWER_EXPONENT = 0.5
#: cap on log2(roofline / launch floor) as a feature (see `features`)
REL_CAP = 3.0
#: GEMM output tiles (rows x cols) whose wave quantization becomes a feature
TILES = ((128, 128), (128, 64), (64, 64), (32, 32))
#: elements per thread block of an element-wise kernel (128 threads x 4-wide vectors)
ELEMS_PER_BLOCK = 512

#: the dense columns of `features`, in order (then the spec logs, then the op/family one-hots)
DENSE_COLUMNS = (
    ["floor_ratio", "rel_time", "balance", "flops", "bytes", "l2_fit", "elems", "gb", "gm",
     "gn", "gk", "H", "rows", "rows_per_sm"]
    + [f"{d}_align{a}" for d in ("gm", "gn", "gk") for a in (4, 32)]
    + [f"{k}_{tm}x{tn}" for tm, tn in TILES for k in ("waves", "wave_eff")]
    + ["row_waves", "row_wave_eff"])
#: dense columns computed from the device's spec; the others depend on the op and shape only
DEVICE_COLUMNS = frozenset(
    ["floor_ratio", "rel_time", "balance", "l2_fit", "rows_per_sm", "row_waves", "row_wave_eff"]
    + [c for c in DENSE_COLUMNS if c.startswith("wave")])

_S = {k: i for i, k in enumerate(SPEC_COLUMNS)}
_OP_INDEX = {op: i for i, op in enumerate(OP_NAMES)}
_FAM_INDEX = {f: i for i, f in enumerate(FAMILIES)}


#: op -> (is_gemm, is_conv, half precision, weights shared over batch, io, flops/elem,
#: op index, family index), looked up once per row
_STATIC = {op: (fam in ("gemm", "gemm16"), fam == "conv", fam.endswith("16"),
                op == "linear" or fam == "gemm16", io, fpe, _OP_INDEX[op], _FAM_INDEX[fam])
           for op, (fam, _, io, fpe) in OPS.items()}


def _nz(x: np.ndarray, value: float) -> np.ndarray:
    """x with NaN replaced by `value` (cheaper than np.nan_to_num on tiny arrays)."""
    return np.where(x == x, x, value)


def _col(shape: dict, name: str, n: int) -> np.ndarray:
    v = shape.get(name)
    if v is None:
        return np.full(n, np.nan)
    return np.asarray(v, dtype=float).reshape(-1) * np.ones(n)


def kernel_work(ops: np.ndarray, shape: dict) -> dict[str, np.ndarray]:
    """Per row: flops, bytes (minimum DRAM traffic), GEMM dims (gm, gn, gk, batch) where the
    op is a GEMM or implicit-GEMM conv, element count `elems`, rows and a tensor-core flag."""
    n = len(ops)
    B = _nz(_col(shape, "B", n), 1.0)
    M, N, K, H = (_col(shape, c, n) for c in "MNKH")
    st = np.array([_STATIC[o][:6] for o in ops], dtype=float).reshape(n, 6)
    gemm, conv, half, shared_w = (st[:, i] > 0 for i in range(4))
    io, fpe = st[:, 4], st[:, 5]
    esize = np.where(half, 2.0, 4.0)
    rows = ~(gemm | conv)

    # GEMMs: C[B, M, N] = A[B, M, K] @ W[B, K, N]; linear shares W across the batch
    gb, gm, gn, gk = B.copy(), M.copy(), N.copy(), K.copy()
    # conv as implicit GEMM: M = B*out^2, N = Cout, K = Cin*k^2
    cin, cout = _col(shape, "in_channels", n), _col(shape, "out_channels", n)
    ks, size = _col(shape, "kernel_size", n), _col(shape, "input_size", n)
    stride = _nz(_col(shape, "stride", n), 1.0)
    pad = _nz(_col(shape, "padding", n), 0.0)
    out = np.maximum(np.floor((size + 2 * pad - ks) / stride) + 1, 1)
    gb = np.where(conv, 1.0, gb)
    gm = np.where(conv, B * out * out, gm)
    gn = np.where(conv, cout, gn)
    gk = np.where(conv, cin * ks * ks, gk)
    gemm_bytes = esize * (gb * gm * gk + np.where(shared_w, 1, gb) * gk * gn + gb * gm * gn)
    conv_bytes = 4.0 * (B * cin * size * size + cout * cin * ks * ks + B * cout * out * out)
    elems = np.where(rows, B * H, gb * gm * gn)
    flops = np.where(rows, fpe * B * H, 2.0 * gb * gm * gn * gk)
    nbytes = np.where(rows, io * esize * B * H, np.where(conv, conv_bytes, gemm_bytes))
    return {"flops": flops, "bytes": nbytes, "gb": gb, "gm": gm, "gn": gn, "gk": gk,
            "elems": elems, "rows": np.where(rows, B, gb * gm), "half": half,
            "is_gemm": ~rows, "B": B, "H": H}


@contextmanager
def power_budget(gflops_per_w: float) -> Iterator[None]:
    """Within the block, `sustained_fp32` uses `gflops_per_w` instead of POWER_GFLOPS_PER_W
    (inf: no power limit); for evaluation protocols that choose the constant."""
    global POWER_GFLOPS_PER_W
    saved, POWER_GFLOPS_PER_W = POWER_GFLOPS_PER_W, float(gflops_per_w)
    try:
        yield
    finally:
        POWER_GFLOPS_PER_W = saved


def sustained_fp32(single_flops, tdp):
    """Sustained fp32 peak (GFLOP/s) of a board with data-sheet peak `single_flops` (GFLOP/s)
    and board power `tdp` (W; inf = no limit): SingleFLOPs x min(1, (POWER_GFLOPS_PER_W x TDP
    / SingleFLOPs) ** POWER_EXPONENT). Below the budget the clock, hence the peak, drops with
    about the square root of the power ratio (dynamic power grows faster than linearly with
    the clock, as the voltage rises with it). Works on floats (builtins only: the scalar
    runtime path calls it per kernel) and numpy arrays."""
    ratio = POWER_GFLOPS_PER_W * tdp / single_flops
    capped = min(ratio, 1.0) if isinstance(ratio, float) else np.minimum(1.0, ratio)  # NaN stays
    return single_flops * capped ** POWER_EXPONENT


def roofline_ms(work: dict, spec: np.ndarray, power: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    """(compute time, memory time) in ms at the spec's peak FLOP/s (fp32: the power-limited
    `sustained_fp32`, or SingleFLOPs when not `power`; the tensor-core peak for fp16 GEMMs)
    and DRAM bandwidth."""
    fp32 = spec[:, _S["SingleFLOPs"]]
    if power:
        fp32 = sustained_fp32(fp32, spec[:, _S[POWER_KEY]])
    peak = 1e9 * np.where(work["half"] & work["is_gemm"], spec[:, _S[TENSOR_KEY]], fp32)
    t_comp = work["flops"] / peak * 1e3
    t_mem = work["bytes"] / (spec[:, _S["Mem_Bw"]] * 1e9) * 1e3
    return t_comp, t_mem


def baseline_ms(work: dict, spec: np.ndarray) -> np.ndarray:
    """Roofline-only latency (ms) at the data-sheet peaks: max(compute, memory) +
    LAUNCH_FLOOR_MS."""
    t_comp, t_mem = roofline_ms(work, spec, power=False)
    return np.maximum(t_comp, t_mem) + LAUNCH_FLOOR_MS


def _waves(units: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log2 of waves, wave efficiency in (0, 1]) of `units` spread over `slots`."""
    units = np.maximum(units, 1.0)
    waves = np.ceil(units / slots)
    return np.log2(waves), units / (waves * slots)


def _lg(x: np.ndarray) -> np.ndarray:
    return np.log2(np.maximum(_nz(x, 1.0), 1e-12))


def features(ops: np.ndarray, shape: dict, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(feature matrix float32 [rows, n_features], roofline baseline in ms) for canonical
    `ops`, shape columns `shape` (arrays, NaN where unused) and spec rows (SPEC_COLUMNS order)."""
    ops = np.asarray(ops, dtype=object)
    w = kernel_work(ops, shape)
    t_comp, t_mem = roofline_ms(w, spec)
    base = np.maximum(t_comp, t_mem) + LAUNCH_FLOOR_MS
    sms = spec[:, _S["Num_Sm"]]
    l2 = spec[:, _S["L2Cache"]] * 2**20
    # device-relative, saturating time features: the MLP sees how far above the launch
    # floor a kernel is only up to 2**REL_CAP x the floor, and L2 fit as a fraction in (0, 1),
    # so for large kernels it cannot key on a device's absolute speed (an unseen GPU's
    # FLOP/s, bandwidth or L2 lie outside the few training GPUs' range) and predicts the
    # utilization from shape, arithmetic intensity vs machine balance and wave quantization
    rel = _lg(base / LAUNCH_FLOOR_MS)
    cols = [
        LAUNCH_FLOOR_MS / base, np.minimum(rel, REL_CAP), _lg(t_comp) - _lg(t_mem),
        _lg(w["flops"]), _lg(w["bytes"]), 1.0 / (1.0 + w["bytes"] / l2), _lg(w["elems"]),
        _lg(w["gb"]), _lg(w["gm"]), _lg(w["gn"]), _lg(w["gk"]), _lg(w["H"]), _lg(w["rows"]),
        _lg(w["rows"] / sms),
    ]
    for d in ("gm", "gn", "gk"):  # vector-width alignment decides the kernel variant
        v = _nz(w[d], 4.0)
        cols += [(v % 4 == 0).astype(float), (v % 32 == 0).astype(float)]
    gm, gn = _nz(w["gm"], 1.0), _nz(w["gn"], 1.0)
    for tm, tn in TILES:
        tiles = np.where(w["is_gemm"], w["gb"] * np.ceil(gm / tm) * np.ceil(gn / tn),
                         np.ceil(w["elems"] / ELEMS_PER_BLOCK))
        lw, eff = _waves(tiles, sms)
        cols += [lw, eff]
    lw, eff = _waves(w["rows"], sms * 4)
    cols += [lw, eff]
    cols += [np.log2(spec[:, _S[k]]) for k in SPEC_KEYS]
    onehot = np.zeros((len(ops), len(OP_NAMES) + len(FAMILIES)))
    idx = np.array([_STATIC[o][6] for o in ops], dtype=int)
    fidx = np.array([_STATIC[o][7] for o in ops], dtype=int) + len(OP_NAMES)
    onehot[np.arange(len(ops)), idx] = 1
    onehot[np.arange(len(ops)), fidx] = 1
    X = np.column_stack([*cols, onehot]).astype(np.float32)
    return X, base


def n_spec_features() -> int:
    """Number of raw spec columns in the feature matrix (they sit right before the one-hots)."""
    return len(SPEC_KEYS)


# -- scalar fast path ------------------------------------------------------------------------
# `features_one` is `features` for one kernel in plain Python floats (no numpy per op): the
# Estimator's hot path. tests/test_kernel_latency_physics.py checks the two agree.

_LG_MIN = math.log2(1e-12)


def _lg1(x: float) -> float:
    """`_lg` of one float: log2(x) floored at 1e-12, NaN -> 0."""
    if x > 1e-12:
        return math.log2(x)
    return 0.0 if x != x else _LG_MIN


def _waves1(units: float, slots: float) -> tuple[float, float]:
    units = max(units, 1.0)
    waves = math.ceil(units / slots)
    return math.log2(waves), units / (waves * slots)


def features_one(op: str, dims: dict, spec: tuple) -> tuple[list[float], float]:
    """(the dense feature columns of `features` before the spec columns and one-hots, roofline
    baseline ms) for one canonical `op`, its dims (`ops.shape_dict` output) and one spec row
    (floats in SPEC_COLUMNS order, already checked)."""
    gemm, conv, half, shared_w, io, fpe = _STATIC[op][:6]
    nan = math.nan
    B = dims.get("B", 1.0)
    H = dims.get("H", nan)
    esize = 2.0 if half else 4.0
    if conv:
        cin, cout = dims["in_channels"], dims["out_channels"]
        ks, size = dims["kernel_size"], dims["input_size"]
        stride, pad = dims.get("stride", 1.0), dims.get("padding", 0.0)
        out = max(math.floor((size + 2 * pad - ks) / stride) + 1, 1)
        gb, gm, gn, gk = 1.0, B * out * out, cout, cin * ks * ks
        nbytes = 4.0 * (B * cin * size * size + cout * cin * ks * ks + B * cout * out * out)
    elif gemm:
        gb, gm, gn, gk = B, dims["M"], dims["N"], dims["K"]
        nbytes = esize * (gb * gm * gk + (1.0 if shared_w else gb) * gk * gn + gb * gm * gn)
    else:
        gb, gm, gn, gk = B, nan, nan, nan
        nbytes = io * esize * B * H
    is_gemm = gemm or conv
    if is_gemm:
        elems, flops, rows = gb * gm * gn, 2.0 * gb * gm * gn * gk, gb * gm
    else:
        elems, flops, rows = B * H, fpe * B * H, B
    peak = 1e9 * (spec[_S[TENSOR_KEY]] if half and is_gemm
                  else sustained_fp32(spec[_S["SingleFLOPs"]], spec[_S[POWER_KEY]]))
    t_comp = flops / peak * 1e3
    t_mem = nbytes / (spec[_S["Mem_Bw"]] * 1e9) * 1e3
    base = max(t_comp, t_mem) + LAUNCH_FLOOR_MS
    sms = spec[_S["Num_Sm"]]
    l2 = spec[_S["L2Cache"]] * 2**20
    cols = [LAUNCH_FLOOR_MS / base, min(_lg1(base / LAUNCH_FLOOR_MS), REL_CAP),
            _lg1(t_comp) - _lg1(t_mem), _lg1(flops), _lg1(nbytes), 1.0 / (1.0 + nbytes / l2),
            _lg1(elems), _lg1(gb), _lg1(gm), _lg1(gn), _lg1(gk), _lg1(H), _lg1(rows),
            _lg1(rows / sms)]
    for v in (gm, gn, gk):
        v = 4.0 if v != v else v
        cols += [float(v % 4 == 0), float(v % 32 == 0)]
    gm1, gn1 = (1.0 if gm != gm else gm), (1.0 if gn != gn else gn)
    for tm, tn in TILES:
        tiles = (gb * math.ceil(gm1 / tm) * math.ceil(gn1 / tn) if is_gemm
                 else math.ceil(elems / ELEMS_PER_BLOCK))
        cols += _waves1(tiles, sms)
    cols += _waves1(rows, sms * 4)
    return cols, base
