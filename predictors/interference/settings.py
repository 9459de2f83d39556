"""Training settings of the interference models and their fast / full presets (light: the
CLI reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from servecast.predictors.presets import Preset


@dataclass(frozen=True)
class TrainSettings:
    """What `evaluate.compare` / `train_model` pass to `InterferencePredictor` besides the
    model name: epochs and mini-batch rows of the neural models, their width (`d_model`),
    depth (`layers`) and learning rate, the GBM's tree budget (early-stopped on val) and the
    size of the neural seed ensemble (`n_seeds`); `train_steps` > 0 sets the networks'
    budget in optimizer steps instead of epochs (`InterferencePredictor.epochs_for`)."""

    epochs: int = 8
    d_model: int = 32
    layers: int = 1
    batch_size: int = 256
    lr: float = 5e-3
    gbm_trees: int = 2000
    n_seeds: int = 3
    train_steps: int = 0


#: full: sized for <= 15 min of training (wall) of the dual model per task on the shared
#: 2-core machine, a 3-seed ensemble of 8 epochs each; GBM up to 2000 trees, early-stopped
#: on val (timings and scores: docs/results.md#interference). fast: the demo and the tests.
PRESET = Preset(fast=TrainSettings(epochs=6, gbm_trees=100, n_seeds=1), full=TrainSettings())
