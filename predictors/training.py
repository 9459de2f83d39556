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


def array_loader(*arrays, batch_size: int, shuffle: bool = False, seed: int | None = None,
                 drop_last: bool = False, whole_batches: bool = False, collate=None):
    """The one DataLoader builder: mini-batches of rows of equally long `arrays` (numpy
    arrays or tensors; row i of each array is sample i).

    Each batch is the tuple `(a[rows] for a in arrays)`, sliced in one call per array (no
    per-row collate cost); it equals what `DataLoader(TensorDataset(*arrays), batch_size,
    shuffle, drop_last)` yields, row for row. `collate(rows)` instead turns the row indices
    (a list of ints) into the batch, for inputs that are not arrays (texts to tokenize): then
    only the length of `arrays` is used.

    shuffle: draw a new row order every epoch, from `torch.Generator(seed)` when `seed` is
    given, else from torch's global generator (seeded by `make_trainer`).
    whole_batches: fix the batches once (consecutive slices of one permutation seeded by
    `seed`) and shuffle only their order every epoch: the cheapest loader for big tables.
    drop_last: leave out the last, partial batch.
    """
    import numpy as np
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    if not arrays:
        raise ValueError("array_loader needs at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays of different lengths: {[len(a) for a in arrays]}")
    if collate is None:
        arrays = tuple(a if torch.is_tensor(a) else torch.as_tensor(a) for a in arrays)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    if whole_batches:
        perm = np.random.default_rng(seed).permutation(n)
        starts = range(0, n, batch_size)
        if collate is None:
            arrays = tuple(a[torch.as_tensor(perm)] for a in arrays)
            units = [slice(i, i + batch_size) for i in starts]
        else:
            units = [perm[i:i + batch_size].tolist() for i in starts]
        if drop_last and n % batch_size:
            units.pop()
        order = range(len(units))
        sampler = (RandomSampler(order, generator=generator) if shuffle
                   else SequentialSampler(order))
    else:
        units = None
        inner = (RandomSampler(range(n), generator=generator) if shuffle
                 else SequentialSampler(range(n)))
        sampler = BatchSampler(inner, batch_size, drop_last)
    dataset = _Rows(arrays, collate, units)
    return DataLoader(dataset, batch_size=None, sampler=sampler, generator=generator)


class _Rows:
    """Map-style dataset whose items are whole batches: `[rows]` (a list of row indices, or
    the number of a fixed batch in `units`) -> tuple of array slices, or `collate(rows)`."""

    def __init__(self, arrays: tuple, collate, units: list | None):
        self.arrays, self.collate, self.units = arrays, collate, units

    def __len__(self) -> int:
        return len(self.units) if self.units is not None else len(self.arrays[0])

    def __getitem__(self, rows):
        if self.units is not None:
            rows = self.units[rows]
        if self.collate is not None:
            return self.collate(list(rows))
        return tuple(a[rows] for a in self.arrays)


def fit_module(module, train, val=None, *, epochs: int, batch_size: int, seed: int = 0,
               shuffle: bool = True, loader_seed: int | None = None, drop_last: bool = False,
               whole_batches: bool = False, collate=None, val_batch_size: int | None = None,
               **trainer_kw):
    """The one "fit a LightningModule on arrays" helper: `make_trainer(max_epochs=epochs,
    seed=seed, **trainer_kw)` (so every fit runs the same on CPU, GPU or DDP), then
    `trainer.fit` on `array_loader(*train, ...)` and, when `val` is given, on an unshuffled
    `array_loader(*val)` of `val_batch_size` rows (default: `batch_size`).

    module: a LightningModule, or a zero-argument callable building one; the callable runs
    after seeding, so the initial weights depend only on `seed`.
    train / val: tuples of arrays, one row per sample (the module's `training_step` gets the
    tuple of slices); the loader options are `array_loader`'s (`loader_seed` is its `seed`).

    Returns the fitted Trainer: `trainer.lightning_module` is the module (still on the
    device it was trained on), `trainer.callback_metrics` its last logged values.
    """
    import pytorch_lightning as pl

    trainer = make_trainer(max_epochs=epochs, seed=seed, **trainer_kw)
    if not isinstance(module, pl.LightningModule):
        module = module()
    loader = array_loader(*train, batch_size=batch_size, shuffle=shuffle, seed=loader_seed,
                          drop_last=drop_last, whole_batches=whole_batches, collate=collate)
    val_loader = None if val is None else array_loader(
        *val, batch_size=val_batch_size or batch_size, collate=collate)
    trainer.fit(module, loader, val_loader)
    return trainer
