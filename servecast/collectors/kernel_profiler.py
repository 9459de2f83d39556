"""Measure operator latencies on the local device with PyTorch, in the `kernel_latencies`
schema, so a user can add a device of their own (`servecast profile-kernels`); a profile
written as CSV ingests like any trace (`servecast ingest kernel-profile FILE`).

CUDA: CUDA events around each launch after warm-up (ms, median of `repeats`).
CPU: `time.perf_counter` around each call after warm-up (ms, median of `repeats`).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.kernel_latency.ops import OPS, SHAPE_COLUMNS, canonical_op, check_dims
from servecast.schema import columns

#: shapes measured by default per op family (small enough for a CPU in seconds)
DEFAULT_SHAPES: dict[str, list[dict[str, int]]] = {
    "gemm": [{"B": b, "M": m, "N": n, "K": k} for b in (1, 8) for m in (64, 256)
             for n in (64, 512) for k in (128, 512)],
    "rows": [{"B": b, "H": h} for b in (16, 256, 2048) for h in (256, 1024, 4096)],
    "conv": [{"B": b, "in_channels": c, "out_channels": c, "kernel_size": 3, "input_size": s,
              "stride": 1, "padding": 1} for b in (1, 8) for c in (16, 64) for s in (14, 28)],
}
PROFILABLE = [op for op in OPS if not op.startswith("vidur.")]


def _kernel(op: str, shape: dict, device: str) -> Callable[[], object]:
    """A zero-argument closure running `op` once on fresh fp32 tensors."""
    import torch
    import torch.nn.functional as F

    def t(*dims):
        return torch.randn(*[int(d) for d in dims], device=device)

    fam = OPS[op][0]
    if fam == "gemm":
        B, M, N, K = (int(shape.get(c, 1)) for c in "BMNK")
        if op == "linear":
            x, w = t(B, M, K), t(N, K)
            return lambda: F.linear(x, w)
        a, b = t(B, M, K), t(B, K, N)
        return lambda: torch.bmm(a, b)
    if fam == "conv":
        x = t(shape.get("B", 1), shape["in_channels"], shape["input_size"], shape["input_size"])
        w = t(shape["out_channels"], shape["in_channels"], shape["kernel_size"],
              shape["kernel_size"])
        return lambda: F.conv2d(x, w, stride=int(shape["stride"]), padding=int(shape["padding"]))
    x, y = t(shape["B"], shape["H"]), t(shape["B"], shape["H"])
    H = int(shape["H"])
    fns = {"ln": lambda: F.layer_norm(x, (H,)), "softmax": lambda: torch.softmax(x, -1),
           "add": lambda: x + y, "mul": lambda: x * y, "div": lambda: x / y,
           "pow": lambda: torch.pow(x, y), "addu": lambda: x.add_(1.0),
           "mulu": lambda: x.mul_(1.0), "divu": lambda: x.div_(1.0),
           "powu": lambda: x.pow_(1.0), "relu": lambda: torch.relu(x),
           "gelu": lambda: F.gelu(x), "tanh": lambda: torch.tanh(x)}
    return fns[op]


def time_call(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> list[float]:
    """Latencies (ms) of `repeats` calls of `fn` after `warmup` calls."""
    import torch

    for _ in range(warmup):
        fn()
    out = []
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def device_name(device: str) -> str:
    """A readable name of the local device (the GPU's name, or the CPU model)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine() or "cpu"


def profile_kernels(ops: Iterable[str], device: str = "cpu",
                    shapes: dict[str, list[dict]] | None = None, warmup: int = 3,
                    repeats: int = 10, trace: str = "profile",
                    log: Callable[[str], None] | None = None) -> pl.DataFrame:
    """Measure each op over its shapes (`shapes[op]`, else DEFAULT_SHAPES of its family).

    Returns a frame with the `kernel_latencies` columns (latency_ms = median, latency_std_ms,
    extra = {dtype, warmup, repeats, timer}).
    """
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InvalidInputError(f"--device {device!r}: use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda: no CUDA GPU visible to PyTorch; use --device cpu")
    if warmup < 0 or repeats < 1:
        raise InvalidInputError("warmup must be >= 0 and repeats >= 1")
    names = [canonical_op(o) for o in ops]
    bad = [o for o in names if o not in PROFILABLE]
    if bad:
        raise InvalidInputError(f"cannot profile {bad}; profilable ops: {', '.join(PROFILABLE)}")
    dev_name = device_name(device)
    timer = "cuda-events" if device.startswith("cuda") else "perf_counter"
    rows = []
    with torch.no_grad():
        for op in names:
            fam = OPS[op][0]
            todo = (shapes or {}).get(op) or DEFAULT_SHAPES[
                "gemm" if fam == "gemm" else "conv" if fam == "conv" else "rows"]
            for shape in todo:
                check_dims(op, {"B": 1, **shape}, where="profile shape: ")
                times = time_call(_kernel(op, shape, device), device, warmup, repeats)
                rows.append({"trace": trace, "source": "profile", "device": dev_name, "op": op,
                             **{c: shape.get(c) for c in SHAPE_COLUMNS},
                             "latency_ms": statistics.median(times),
                             "latency_std_ms": statistics.pstdev(times),
                             "extra": json.dumps({"dtype": "float32", "warmup": warmup,
                                                  "repeats": repeats, "timer": timer})})
            if log:
                log(f"{op}: {len(todo)} shapes")
    cols = [name for name, _ in columns("kernel_latencies")]
    return pl.DataFrame(rows).select([pl.col(c) if c in rows[0] else pl.lit(None).alias(c)
                                      for c in cols])


def write_profile(df: pl.DataFrame, out: str | Path) -> Path:
    """Write a profile frame as .csv or .parquet (by suffix)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        df.write_parquet(out)
    elif out.suffix == ".csv":
        df.write_csv(out)
    else:
        raise InvalidInputError(f"--out {out}: use a .csv or .parquet file name")
    return out
