"""Per-call latency of `Estimator.kernel_latency` (target <= 100 us) and the batch form's
throughput, against the naive baseline of calling the predictor's frame API per kernel.

    .venv/bin/python benchmarks/kernel_latency_runtime.py MODEL_DIR
"""

from __future__ import annotations

import sys
import time

import numpy as np
import polars as pl


def main() -> None:
    from servecast.estimator import Estimator
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    model_dir = sys.argv[1]
    est = Estimator.load(model_dir)
    spec = {"Dev_Mem": 80, "Mem_Bw": 3430, "Num_Sm": 132, "Core_Per_SM": 128, "Freq": 1980,
            "SingleFLOPs": 66908, "L2Cache": 50}
    rng = np.random.default_rng(0)
    shapes = rng.integers(1, 2048, size=(2000, 4))
    est.kernel_latency("bmm", [8, 1024, 1024, 1024], spec)  # load
    t0 = time.perf_counter()
    for s in shapes:
        est.kernel_latency("bmm", s.tolist(), spec)
    per_call = (time.perf_counter() - t0) / len(shapes) * 1e6
    frame = pl.DataFrame({"op": ["bmm"] * len(shapes), "device": ["h100"] * len(shapes),
                          **{c: shapes[:, i] for i, c in enumerate("BMNK")}})
    t0 = time.perf_counter()
    est.kernel_latency_batch(frame, {"h100": spec})
    batch = (time.perf_counter() - t0) / len(shapes) * 1e6
    pred = KernelLatencyPredictor.load(f"{model_dir}")
    t0 = time.perf_counter()
    for i in range(200):
        pred.predict(frame[i:i + 1], {"h100": spec})
    naive = (time.perf_counter() - t0) / 200 * 1e6
    print(f"Estimator.kernel_latency: {per_call:.1f} us/call (target <= 100 us)")
    print(f"Estimator.kernel_latency_batch: {batch:.2f} us/kernel")
    print(f"baseline predictor.predict on a 1-row frame: {naive:.1f} us/call "
          f"-> {naive / per_call:.1f}x slower than the runtime (CPU shared with other jobs)")


if __name__ == "__main__":
    main()
