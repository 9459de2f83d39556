"""The one Trainer factory every neural predictor uses: same code on CPU, one GPU or DDP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: callbacks every Trainer made by `make_trainer` gets, added by `extra_callbacks`
_AMBIENT: list = []


@contextmanager
def extra_callbacks(*callbacks) -> Iterator[None]:
    """Within the block, every `make_trainer` Trainer also gets `callbacks` (e.g. the demo's
    one-line-per-epoch progress), whichever predictor builds it."""
    _AMBIENT.extend(callbacks)
    try:
        yield
    finally:
        del _AMBIENT[len(_AMBIENT) - len(callbacks):]


def seed_everything(seed: int = 0) -> None:
    """Seed python, numpy and torch (and Lightning's workers)."""
    import pytorch_lightning as pl

    pl.seed_everything(seed, workers=True, verbose=False)


def make_trainer(
    max_epochs: int = 20,
    seed: int = 0,
    accelerator: str | None = None,
    devices: int | str = "auto",
    log_dir: str | Path | None = None,
    progress: bool | None = None,
    callbacks: list | None = None,
    **kwargs,
):
    """A deterministic Lightning Trainer.

    accelerator: "auto" (default; `$SERVECAST_ACCELERATOR` overrides) picks a GPU when one is
    present, else CPU. No checkpoints or loggers are written unless `log_dir` is given.
    Progress bars show on a terminal only (`progress` forces).
    """
    import logging
    import sys
    import warnings

    import pytorch_lightning as pl
    import torch

    # one line per run is enough: no GPU/TPU banners, tips or pytree deprecation noise
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    seed_everything(seed)
    torch.set_float32_matmul_precision("high")
    accelerator = accelerator or os.environ.get("SERVECAST_ACCELERATOR", "auto")
    if progress is None:
        progress = sys.stderr.isatty()
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        deterministic="warn",
        logger=pl.loggers.CSVLogger(str(log_dir)) if log_dir else False,
        enable_checkpointing=bool(log_dir),
        enable_progress_bar=progress,
        enable_model_summary=False,
        callbacks=[*(callbacks or []), *_AMBIENT],
        **kwargs,
    )
