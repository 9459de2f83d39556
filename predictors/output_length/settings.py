"""Training settings of `train output-length` and their fast / full presets (light: the CLI
reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from servecast.predictors.presets import Preset


@dataclass(frozen=True)
class TrainSettings:
    """What `train.train_output_length` passes on: the metadata GBM's LightGBM settings
    (`n_estimators` trees, `learning_rate`, `num_leaves`, `min_child_samples` rows per
    leaf), the rows the text model samples from the trace (`text_rows`; 0: every row) and
    the epochs it first fine-tunes its sentence encoder for (`finetune_epochs`; 0: none,
    finetune.py)."""

    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 50
    text_rows: int = 0
    finetune_epochs: int = 0

    def params(self, model: str) -> dict:
        """The constructor parameters of output-length model `model` these settings set
        (none for the baselines)."""
        if model == "metadata":
            return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                    "num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples}
        if model == "text":
            return {"finetune_epochs": self.finetune_epochs}
        return {}


#: full: the CLI's default and the reported numbers; 15 leaves of >= 50 rows (better than
#: 31 leaves / 20 rows on Azure conversation: docs/results.md). fast: the demo's and the
#: tests': fewer, faster-learning trees, and the text model on a sample (embedding the rows
#: is its cost; seconds when cached: docs/results.md). Fine-tuning the encoder is opt-in in
#: both: it costs far more than the rest of the fit on a CPU (docs/results.md).
PRESET = Preset(
    fast=TrainSettings(n_estimators=80, learning_rate=0.1, num_leaves=31, min_child_samples=20,
                       text_rows=8000),
    full=TrainSettings())
