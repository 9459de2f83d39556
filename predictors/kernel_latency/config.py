"""Training settings of the cross-device kernel-latency model and their fast / full presets
(light: the CLI reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from servecast.predictors.presets import Preset


@dataclass(frozen=True)
class KernelSettings:
    """`train_kernel_model`'s settings: epochs of the residual MLPs, the rows each member
    draws (None = 1/ensemble of the kernels) and the members per feature view.

    The full preset keeps each member's fit short (8 epochs of 86,000 rows in batches of
    2048, about 340 optimizer steps): a GPU never measured is an extrapolation in device
    space, and longer fits of the same training GPUs follow their own quirks further
    (leave-one-GPU-out in docs/results.md). 86,000 rows of NeuSight's mix hold about 40,000
    GEMM kernels, the size the training length was chosen at."""

    epochs: int = 8
    max_rows: int | None = 86_000
    ensemble: int = 3


#: full: the CLI's and the benchmarks'; fast: the demo's (one member per view, 60k rows)
PRESET = Preset(fast=KernelSettings(epochs=3, max_rows=60_000, ensemble=1),
                full=KernelSettings())
