"""Per-call latency of `Estimator.kernel_latency` (target <= 100 us) and the batch form's
throughput, against calling the underlying model directly per kernel: the vectorized
feature + MLP path on a 1-row input (`Runtime._predict`, what the Estimator did before the
scalar fast path) and the predictor's frame API (`KernelLatencyPredictor.predict`).

    .venv/bin/python benchmarks/kernel_latency_runtime.py MODEL_DIR

MODEL_DIR is a models dir with a `kernel_latency/` sub-folder, or that folder itself.
The machine may be shared: the ratios are the load-independent numbers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl


def _per_call(fn, items, repeat: int = 3, clock=time.perf_counter) -> float:
    """Best-of-`repeat` mean µs per call of fn(item) over items."""
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        for it in items:
            fn(it)
        best = min(best, (clock() - t0) / len(items) * 1e6)
    return best


def main() -> None:
    from servecast.estimator import Estimator
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    model_dir = Path(sys.argv[1])
    if (model_dir / "kernel_latency" / "model_card.json").is_file():
        model_dir = model_dir / "kernel_latency"
    est = Estimator.load(model_dir)
    spec = {"Dev_Mem": 80, "Mem_Bw": 3430, "Num_Sm": 132, "Core_Per_SM": 128, "Freq": 1980,
            "SingleFLOPs": 66908, "L2Cache": 50}
    rng = np.random.default_rng(0)
    shapes = rng.integers(1, 2048, size=(2000, 4))
    calls = [s.tolist() for s in shapes]
    est.kernel_latency("bmm", [8, 1024, 1024, 1024], spec)  # load
    fast = _per_call(lambda s: est.kernel_latency("bmm", s, spec), calls)
    # CPU time of this process per call: what a call costs without the other jobs' share
    fast_cpu = _per_call(lambda s: est.kernel_latency("bmm", s, spec), calls,
                         clock=time.process_time)
    rt = est.runtime("kernel_latency")
    spec_row = rt._spec_row(spec)
    ops = np.array(["bmm"], dtype=object)

    def vectorized(s):  # the model called directly: 1-row vectorized features + MLP
        return rt._predict(ops, {c: np.array([float(v)]) for c, v in zip("BMNK", s, strict=True)},
                           spec_row)[0]

    direct = _per_call(vectorized, calls[:500])
    direct_cpu = _per_call(vectorized, calls[:500], clock=time.process_time)
    got = np.array([est.kernel_latency("bmm", s, spec) for s in calls[:200]])
    want = np.array([vectorized(s) for s in calls[:200]])
    frame = pl.DataFrame({"op": ["bmm"] * len(shapes), "device": ["h100"] * len(shapes),
                          **{c: shapes[:, i] for i, c in enumerate("BMNK")}})
    t0 = time.perf_counter()
    est.kernel_latency_batch(frame, {"h100": spec})
    batch = (time.perf_counter() - t0) / len(shapes) * 1e6
    pred = KernelLatencyPredictor.load(model_dir).with_devices({"h100": spec})
    naive = _per_call(lambda i: pred.predict(frame[i:i + 1]), range(100), 1)
    print(f"Estimator.kernel_latency (scalar fast path): {fast:.1f} us/call wall, "
          f"{fast_cpu:.1f} us/call CPU (target <= 100 us)")
    print(f"model called directly (1-row vectorized features + MLP): {direct:.1f} us/call wall, "
          f"{direct_cpu:.1f} CPU -> fast path {direct / fast:.1f}x faster (CPU "
          f"{direct_cpu / fast_cpu:.1f}x); max rel. difference "
          f"{np.max(np.abs(got / want - 1)):.1e}")
    print(f"predictor.predict on a 1-row frame: {naive:.1f} us/call -> fast path "
          f"{naive / fast:.1f}x faster")
    print(f"Estimator.kernel_latency_batch: {batch:.2f} us/kernel (2000 kernels)")


if __name__ == "__main__":
    main()
