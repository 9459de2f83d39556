"""Small-MoE run settings and their fast / full presets (light: the CLI reads its defaults
from here; `run.py` trains with them)."""

from __future__ import annotations

from dataclasses import dataclass

from servecast.predictors.presets import Preset


@dataclass
class RunConfig:
    """Small-MoE run settings. Sizes in tokens; `steps` optimizer steps of `batch_size`
    windows of `context` tokens; `snapshots` checkpoints spread over training (plus step 0)."""

    alpha: float = 0.01  # Switch aux-loss coefficient (0 = no balancing loss)
    steps: int = 300
    snapshots: int = 6
    n_experts: int = 8
    top_k: int = 1
    layers: int = 2
    d: int = 64
    d_ff: int = 128
    heads: int = 4
    context: int = 64
    batch_size: int = 32
    lr: float = 3e-3
    vocab: int = 2048
    train_conversations: int = 600
    eval_conversations: int = 100
    eval_windows: int = 128
    batch_windows: int = 4  # eval windows per routing batch (256 tokens)
    seed: int = 0


#: full: `servecast moe train-small`'s defaults; fast: the demo's tiny run (60 steps, two
#: snapshots, fewer conversations and eval windows; its CPU time: docs/results.md#demo)
PRESET = Preset(
    fast=RunConfig(steps=60, snapshots=2, eval_windows=48, batch_windows=2,
                   train_conversations=120, eval_conversations=30),
    full=RunConfig())
