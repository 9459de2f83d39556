"""A small kernel-latency fitting problem for the conformance tests (registry `fixture`).

bmm kernels on three GPU spec sheets (A100-, V100- and T4-like numbers), latency = the
roofline times a device-dependent efficiency and lognormal noise; 1,200 train / 200 test
rows, one ensemble member trained for 2 epochs."""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.predictors.registry import Fixture

DEVICES = {
    "a100": {"Dev_Mem": 40, "Mem_Bw": 1555, "Num_Sm": 108, "Core_Per_SM": 64, "Freq": 1410,
             "SingleFLOPs": 19500, "L2Cache": 40},
    "v100": {"Dev_Mem": 32, "Mem_Bw": 900, "Num_Sm": 80, "Core_Per_SM": 64, "Freq": 1530,
             "SingleFLOPs": 15700, "L2Cache": 6},
    "t4": {"Dev_Mem": 16, "Mem_Bw": 320, "Num_Sm": 40, "Core_Per_SM": 64, "Freq": 1590,
           "SingleFLOPs": 8100, "L2Cache": 4},
}
EFFICIENCY = {"a100": 1.6, "v100": 1.9, "t4": 2.4}  # measured / roofline, on average


def kernels(n: int, seed: int) -> pl.DataFrame:
    """`n` bmm rows [op, device, B, M, N, K, latency_ms]."""
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({"op": "bmm", "device": rng.choice(list(DEVICES), n),
                          "B": rng.integers(1, 16, n), "M": rng.integers(16, 2048, n),
                          "N": rng.integers(16, 2048, n), "K": rng.integers(16, 2048, n)})
    eff = np.array([EFFICIENCY[d] for d in frame["device"]])
    roof = KernelLatencyPredictor.predict_roofline(frame, DEVICES)
    return frame.with_columns(latency_ms=roof * eff * rng.lognormal(0, 0.1, n))


def fixture(seed: int = 0) -> Fixture:
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    return Fixture(make=lambda: KernelLatencyPredictor(DEVICES, epochs=2, ensemble=1,
                                                       batch_size=256, seed=seed),
                   train=kernels(1200, seed), test=kernels(200, seed + 1),
                   columns=("latency_ms",))
