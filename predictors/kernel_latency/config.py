"""Training settings of the cross-device kernel-latency model and their fast / full presets
(light: the CLI reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from servecast.predictors.presets import Preset


@dataclass(frozen=True)
class KernelSettings:
    """`train_kernel_model`'s settings: epochs of the residual MLPs, a row subsample
    (None = every kernel) and the members per feature view of the ensemble."""

    epochs: int = 20
    max_rows: int | None = None
    ensemble: int = 3


#: full: the CLI's and the benchmarks'; fast: the demo's (one member per view, 60k rows)
PRESET = Preset(fast=KernelSettings(epochs=3, max_rows=60_000, ensemble=1),
                full=KernelSettings())
