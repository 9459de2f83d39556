"""Lightning training of `InterferenceNet` via the shared `fit_module` (CPU or GPU alike)."""

from __future__ import annotations

import copy

import numpy as np
import pytorch_lightning as pl
import torch

from servecast.predictors.interference.net import InterferenceNet
from servecast.predictors.training import fit_module


class InterferenceModule(pl.LightningModule):
    """LightningModule around InterferenceNet: L1 loss (the MAE objective) on perf, or on
    the normalized target (perf - y_center) / y_scale for skip models; AdamW + cosine decay.
    `val_mae` is always in perf units."""

    def __init__(self, n_metrics: int, max_steps: int, d_model: int = 64, heads: int = 4,
                 layers: int = 2, dropout: float = 0.1, branches: str = "dual",
                 skip: bool = False, lr: float = 2e-3, weight_decay: float = 1e-2,
                 epochs: int = 30, wide_l1: float = 0.0, metric_dropout: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = InterferenceNet(n_metrics, max_steps, d_model, heads, layers, dropout,
                                   branches, skip)

    def forward(self, values, mask):
        return self.net(values, mask)

    def _step(self, batch, name: str):
        values, mask, y = batch
        net = self.net
        p = self.hparams.metric_dropout
        if name == "train" and p > 0:  # augmentation: hide whole metrics of a window
            keep = torch.rand(mask.shape[0], 1, mask.shape[2], device=mask.device) >= p
            new = mask & keep
            ok = new.flatten(1).any(1).view(-1, 1, 1)  # never empty a window
            mask = torch.where(ok, new, mask)
            values = values * mask.to(values.dtype)
        if net.skip:
            z = net.forward_z(values, mask)
            loss = torch.nn.functional.l1_loss(z, (y - net.y_center) / net.y_scale)
            mae = loss.detach() * net.y_scale
            if name == "train" and self.hparams.wide_l1 > 0:  # sparse wide path
                loss = loss + self.hparams.wide_l1 * net.wide.weight.abs().sum()
        else:
            loss = mae = torch.nn.functional.l1_loss(self(values, mask), y)
        self.log(f"{name}_mae", mae, prog_bar=True, on_epoch=True, on_step=False,
                 batch_size=len(y))
        return loss

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        return self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.epochs)
        return [opt], [sched]


class KeepBest(pl.Callback):
    """Remember the weights of the epoch with the lowest validation MAE (no files written)."""

    def __init__(self):
        self.best, self.state, self.epoch = float("inf"), None, -1

    def on_validation_epoch_end(self, trainer, module):
        val = trainer.callback_metrics.get("val_mae")
        if val is not None and not trainer.sanity_checking and float(val) < self.best:
            self.best, self.epoch = float(val), trainer.current_epoch
            self.state = copy.deepcopy(module.net.state_dict())


def train_net(train: tuple, val: tuple | None, hparams: dict, epochs: int, batch: int,
              seed: int = 0, anchor: tuple[int, float, float] | None = None,
              stop_epoch: int | None = None, init: dict | None = None,
              **trainer_kw) -> tuple[InterferenceNet, dict]:
    """Fit on `train` = (values, mask, y) arrays; keep the best epoch on `val` when given.

    `anchor` = (metric index, center, scale) of a metric that carries past perf (skip models):
    the wide path starts as its persistence forecast (perf = its last observed value), so
    the network learns the residual on top of it.

    `stop_epoch` stops after that many epochs of the `epochs`-long schedule (a refit on
    train + val up to the best epoch found by a first run).

    `init`: a partial state dict (e.g. a pretrained encoder, `pretrain.encoder_state`)
    loaded over the fresh network before training; None (the default): random weights.

    Returns the trained net (CPU, eval mode) and a log {epochs, best_epoch, val_mae}.
    """
    keep = KeepBest()

    def build() -> InterferenceModule:
        module = InterferenceModule(epochs=epochs, **hparams)
        if init is not None:
            module.net.load_state_dict(init, strict=False)
        if module.net.skip:
            y = np.asarray(train[2], dtype=np.float64)
            center = float(np.median(y))
            scale = max(float(np.mean(np.abs(y - center))), 1e-4)
            module.net.set_target(center, scale)
            if anchor is not None:
                k, c_m, s_m = anchor
                with torch.no_grad():  # z_last * s_m + c_m = last value -> (last - center) / scale
                    module.net.wide.weight[0, k] = s_m / scale
                    module.net.wide.bias[0] = (c_m - center) / scale
        return module

    trainer = fit_module(build, _f32_target(train), None if val is None else _f32_target(val),
                         epochs=min(epochs, stop_epoch or epochs), batch_size=batch,
                         val_batch_size=4 * batch, seed=seed, callbacks=[keep],
                         gradient_clip_val=1.0, num_sanity_val_steps=0, **trainer_kw)
    module = trainer.lightning_module
    if keep.state is not None:
        module.net.load_state_dict(keep.state)
    net = module.net.cpu().eval()
    return net, {"epochs": epochs, "best_epoch": keep.epoch,
                 "val_mae": keep.best if keep.state is not None else None,
                 "device": str(trainer.strategy.root_device)}


def _f32_target(arrays: tuple) -> tuple:
    """(values, mask, y) with y as float32, the dtype the loss compares against."""
    values, mask, y = arrays
    return values, mask, np.asarray(y, dtype=np.float32)
