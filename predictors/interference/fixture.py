"""A small interference fitting problem for the conformance tests (registry `fixture`).

Windows of 4-10 steps at 4 Hz: LLC miss rate rising with a hidden pressure, IPC falling
with it, a third of the windows lacking a network metric; perf = 1 - 0.6 x pressure.
300 train / 80 test windows; a one-layer dual-branch network trained for 2 epochs."""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.predictors.registry import Fixture


def windows(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(metrics [window_id, t, metric, value], labels [window_id, perf]) of `n` windows."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for w in range(n):
        steps = int(rng.integers(4, 11))
        pressure = rng.uniform(0, 1)
        for s in range(steps):
            t = 0.25 * s
            rows.append((f"w{w}", t, "llc_miss_rate",
                         pressure * (s + 1) / steps + rng.normal(0, 0.02)))
            rows.append((f"w{w}", t, "ipc", 2.0 - pressure + rng.normal(0, 0.05)))
            if w % 3:
                rows.append((f"w{w}", t, "net_rx_kpps", rng.normal(50, 10)))
        labels.append((f"w{w}", float(np.clip(1 - 0.6 * pressure, 0.05, 1))))
    return (pl.DataFrame(rows, schema=["window_id", "t", "metric", "value"], orient="row"),
            pl.DataFrame(labels, schema=["window_id", "perf"], orient="row"))


def fixture(seed: int = 0) -> Fixture:
    from servecast.predictors.interference.predictor import InterferencePredictor

    (m, lab), (tm, tl) = windows(300, seed), windows(80, seed + 1)
    return Fixture(make=lambda: InterferencePredictor("dual", max_steps=10, d_model=16,
                                                      heads=2, layers=1, epochs=2,
                                                      batch_size=64, seed=seed),
                   train=m, train_target=lab, test=tm, test_target=tl,
                   columns=("window_id", "perf"))
