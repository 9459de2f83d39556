"""Meta-training settings of the HELP-style adapter and their fast / full presets (light: the
CLI reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from servecast.predictors.presets import Preset


@dataclass(frozen=True)
class HelpSettings:
    """`HardwareAdaptiveLatencyPredictor`'s parameters: meta-training epochs of
    `steps_per_epoch` sampled task batches, hidden width, learning rate, the share of
    hardware-mixup tasks, optional head fine-tuning steps (and their learning rate) when
    adapting to a new device, and the seed."""

    epochs: int = 30
    steps_per_epoch: int = 100
    hidden: int = 128
    lr: float = 2e-3
    mixup: float = 0.5
    adapt_steps: int = 0
    adapt_lr: float = 1e-3
    seed: int = 0


#: full: the CLI's and the benchmark's; fast: the demo's
PRESET = Preset(fast=HelpSettings(epochs=6, steps_per_epoch=60), full=HelpSettings())
