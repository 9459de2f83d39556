"""The residual learner: a small MLP (LightningModule) on standardized physics features,
trained with `predictors.training.make_trainer`, exported to numpy for the fast runtime."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn


class ResidualMLP(pl.LightningModule):
    """MLP(x) -> log residual; loss = L1 in log space (fits median relative error)."""

    def __init__(self, n_in: int, hidden: int = 128, layers: int = 3, lr: float = 3e-3,
                 weight_decay: float = 1e-5, epochs: int = 20):
        super().__init__()
        self.save_hyperparameters()
        dims = [n_in] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            mods += [nn.Linear(a, b), nn.SiLU()]
        mods.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, _):
        x, y = batch
        loss = (self(x) - y).abs().mean()
        self.log("train_l1", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_l1", (self(x) - y).abs().mean(), on_epoch=True, on_step=False)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.hparams.epochs, 1))
        return [opt], [sched]

    def numpy_weights(self) -> list[np.ndarray]:
        """[W0, b0, W1, b1, ...] as float32 numpy arrays (W: [in, out])."""
        out = []
        for m in self.net:
            if isinstance(m, nn.Linear):
                out += [m.weight.detach().cpu().numpy().T.astype(np.float32),
                        m.bias.detach().cpu().numpy().astype(np.float32)]
        return out


def fit_mlp(X: np.ndarray, y: np.ndarray, *, hidden: int, layers: int, epochs: int,
            batch_size: int, lr: float, seed: int, val: tuple | None = None,
            **trainer_kw) -> list[np.ndarray]:
    """Train ResidualMLP on standardized X, target y; returns its numpy weights. Batches are
    fixed slices of one permutation seeded by `seed`, their order shuffled every epoch.
    `val` (X, y): validated (L1, logged as `val_l1`) after every epoch."""
    from servecast.predictors.training import fit_module

    val = None if val is None else tuple(np.asarray(a, np.float32) for a in val)
    trainer = fit_module(lambda: ResidualMLP(X.shape[1], hidden, layers, lr, epochs=epochs),
                         (np.asarray(X, np.float32), np.asarray(y, np.float32)), val,
                         epochs=epochs, batch_size=batch_size, seed=seed, loader_seed=seed,
                         whole_batches=True, **trainer_kw)
    return trainer.lightning_module.numpy_weights()


class BestEpoch(pl.Callback):
    """Keeps the numpy weights of the epoch with the lowest `val_l1` (`weights`), that
    epoch (1-based, `epoch`) and its loss (`loss`, L1 in the target's units)."""

    def __init__(self):
        self.weights, self.epoch, self.loss = None, 0, float("inf")

    def on_validation_epoch_end(self, trainer, module):
        loss = float(trainer.callback_metrics["val_l1"])
        if not trainer.sanity_checking and loss < self.loss:
            self.weights, self.epoch = module.numpy_weights(), trainer.current_epoch + 1
            self.loss = loss


def fit_mlp_best(X: np.ndarray, y: np.ndarray, val: tuple, **kw) -> tuple[list, dict]:
    """`fit_mlp` on (X, y) for its `epochs`, keeping the weights of the epoch with the
    lowest L1 on `val` (X, y) rather than the last: (weights, {"epoch", "epochs",
    "val_l1"}) (the chosen epoch, 1-based, of `epochs`, and its validation L1)."""
    best = BestEpoch()
    fit_mlp(X, y, val=val, callbacks=[best], num_sanity_val_steps=0, **kw)
    return best.weights, {"epoch": best.epoch, "epochs": kw["epochs"], "val_l1": best.loss}


def widen_input(weights: list[np.ndarray], cols: np.ndarray, n_in: int) -> list[np.ndarray]:
    """The same MLP reading an `n_in`-column input of which it was trained on `cols`: the
    first layer gets zero rows for the other columns."""
    w0 = np.zeros((n_in, weights[0].shape[1]), dtype=weights[0].dtype)
    w0[cols] = weights[0]
    return [w0, *weights[1:]]


def merge_mlps(members: list[list[np.ndarray]],
               weights: list[float] | None = None) -> list[np.ndarray]:
    """One MLP computing the mean output of `members` (same architecture, numpy weights
    [W0, b0, ...]), or their average with `weights` (summing to 1): first layers side by
    side, hidden layers block-diagonal, last layer stacked and scaled by each member's
    weight. SiLU is element-wise, so this is exact; a forward pass of the ensemble costs the
    same number of numpy calls as one member (the scalar runtime's budget)."""
    if len(members) == 1:
        return members[0]
    n, out = len(members), []
    wts = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    n_layers = len(members[0]) // 2
    for i in range(n_layers):
        ws = [m[2 * i].astype(np.float64) for m in members]
        bs = [m[2 * i + 1].astype(np.float64) for m in members]
        if i == 0:
            w, b = np.hstack(ws), np.concatenate(bs)
        elif i == n_layers - 1:
            w = np.vstack([x * c for x, c in zip(ws, wts, strict=True)])
            b = np.sum([x * c for x, c in zip(bs, wts, strict=True)], axis=0)
        else:
            w = np.zeros((sum(x.shape[0] for x in ws), sum(x.shape[1] for x in ws)))
            r = c = 0
            for x in ws:
                w[r:r + x.shape[0], c:c + x.shape[1]] = x
                r, c = r + x.shape[0], c + x.shape[1]
            b = np.concatenate(bs)
        out += [w.astype(np.float32), b.astype(np.float32)]
    return out
