"""The shared training toolkit (predictors/training.py): `array_loader` yields what torch's
own loaders yield, and `fit_module` fits a LightningModule on arrays reproducibly.

The fit uses real data: HELP's NAS-Bench-201 latencies of one GPU at batch 1 and 256."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import pytorch_lightning as pl_lightning
import torch
from torch.utils.data import DataLoader, TensorDataset

from servecast.predictors.training import array_loader, fit_module

torch.set_num_threads(1)  # the shared test machine has 2 cores


@pytest.fixture(scope="module")
def latencies(data):
    """(log latency at batch 1, log latency at batch 256) of the 1080 Ti, per architecture."""
    folder = data / "gpu" / "help_nasbench201" / "latency"
    b1, b256 = (pl.read_csv(folder / f"1080ti_{b}.csv").sort("arch_index") for b in (1, 256))
    assert b1["arch_index"].equals(b256["arch_index"])
    return (np.log(b1["latency_ms"].to_numpy()).astype(np.float32),
            np.log(b256["latency_ms"].to_numpy()).astype(np.float32))


def _epochs(loader, n: int = 2) -> list:
    return [batch for _ in range(n) for batch in loader]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed", [None, 7])
@pytest.mark.parametrize("drop_last", [False, True])
def test_array_loader_yields_what_a_tensor_dataset_loader_yields(latencies, seed, drop_last):
    x, y = (a[:1003] for a in latencies)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    torch.manual_seed(1)
    want = _epochs(DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                              batch_size=64, shuffle=True, drop_last=drop_last, generator=gen))
    torch.manual_seed(1)
    got = _epochs(array_loader(x, y, batch_size=64, shuffle=True, seed=seed,
                               drop_last=drop_last))
    assert _same(got, want)
    assert len(got) == 2 * (1003 // 64 + (0 if drop_last else 1))
    assert not _same(got[:1], got[len(got) // 2:][:1])  # a new order every epoch


def test_unshuffled_loader_keeps_row_order(latencies):
    x, _ = latencies
    got = torch.cat([b[0] for b in array_loader(x[:130], batch_size=50)])
    assert torch.equal(got, torch.from_numpy(x[:130]))


def test_whole_batches_cover_every_row_once_per_epoch(latencies):
    x, y = (a[:1000] for a in latencies)
    loader = array_loader(x, y, batch_size=96, shuffle=True, seed=3, whole_batches=True)
    first, second = list(loader), list(loader)
    for epoch in (first, second):
        xs = torch.cat([b[0] for b in epoch])
        assert sorted(xs.tolist()) == sorted(x.tolist())
    # the same fixed batches, in another order
    key = [tuple(b[1].tolist()) for b in first]
    assert sorted(key) == sorted(tuple(b[1].tolist()) for b in second) and key != [
        tuple(b[1].tolist()) for b in second]
    dropped = array_loader(x, y, batch_size=96, whole_batches=True, seed=3, drop_last=True)
    assert len(dropped) == 1000 // 96 and all(len(b[0]) == 96 for b in dropped)


def test_collate_gets_row_indices():
    texts = [f"request {i}" for i in range(10)]
    loader = array_loader(texts, batch_size=4, collate=lambda rows: [texts[i] for i in rows])
    assert list(loader) == [texts[0:4], texts[4:8], texts[8:10]]


def test_arrays_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        array_loader(np.zeros(3), np.zeros(4), batch_size=2)


class _Line(pl_lightning.LightningModule):
    """y = a * x + b with an L1 loss."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = (self.lin(x[:, None]).squeeze(-1) - y).abs().mean()
        self.log("train_l1", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_l1", (self.lin(x[:, None]).squeeze(-1) - y).abs().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


@pytest.mark.slow
def test_fit_module_learns_real_latencies_reproducibly(latencies):
    x, y = latencies
    cut = 12_000
    train, val = (x[:cut], y[:cut]), (x[cut:], y[cut:])

    def fit(seed: int):
        torch.manual_seed(seed + 99)  # the factory runs after fit_module's own seeding
        return fit_module(_Line, train, val, epochs=3, batch_size=256, seed=seed,
                          progress=False)

    a, b, c = fit(0), fit(0), fit(1)
    wa, wb, wc = (t.lightning_module.lin.weight.item() for t in (a, b, c))
    assert wa == wb and wa != wc
    # as good on the held-out rows as the least-squares line, far better than a constant
    val_l1 = float(a.callback_metrics["val_l1"])
    line = np.polyfit(x[:cut], y[:cut], 1)
    line_l1 = float(np.mean(np.abs(np.polyval(line, x[cut:]) - y[cut:])))
    const_l1 = float(np.mean(np.abs(y[cut:] - np.median(y[:cut]))))
    assert val_l1 < 1.05 * line_l1 < 0.8 * const_l1, (val_l1, line_l1, const_l1)
    module = _Line()
    assert fit_module(module, train, epochs=1, batch_size=512, seed=0,
                      progress=False).lightning_module is module
