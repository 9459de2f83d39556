"""The HELP-style meta-learner as a LightningModule: latency of an architecture conditioned on
a hardware embedding (the device's normalized log-latencies of the reference architectures).

Meta-training samples tasks = devices. Besides the real meta-train devices it draws
"hardware mixup" tasks whose log-latencies interpolate two meta-train devices, which fills
the space between the few devices the embedding network sees. Targets are z-scores of the
log-latency with the mean / std of the reference architectures, so one network serves
devices whose latencies differ by 1000x.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn


def _mlp(dims: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        mods += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*mods[:-1])


def ref_stats(log_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embedding z-scores, mean, std) of reference log-latencies [tasks, n_ref]."""
    mu = log_ref.mean(-1, keepdim=True)
    sd = log_ref.std(-1, keepdim=True).clamp_min(1e-3)
    return (log_ref - mu) / sd, mu, sd


class HardwareConditionedNet(pl.LightningModule):
    """f(arch encoding, hardware embedding) -> z-scored log latency."""

    def __init__(self, n_arch: int, n_ref: int, hidden: int = 128, lr: float = 2e-3,
                 tasks_per_step: int = 16, archs_per_task: int = 256, mixup: float = 0.5,
                 epochs: int = 30):
        super().__init__()
        self.save_hyperparameters()
        self.arch_net = _mlp([n_arch, hidden, hidden])
        self.hw_net = _mlp([n_ref, hidden, hidden])
        self.head = _mlp([3 * hidden, hidden, hidden, 1])
        self.log_lat: torch.Tensor | None = None  # [devices, archs], set by set_tasks
        self.arch_x: torch.Tensor | None = None
        self.ref_idx: torch.Tensor | None = None

    def forward(self, arch_x: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
        """arch_x [n, n_arch], hw [n, n_ref] -> z [n]."""
        a, h = self.arch_net(arch_x), self.hw_net(hw)
        return self.head(torch.cat([a, h, a * h], -1)).squeeze(-1)

    def set_tasks(self, log_lat, arch_x, ref_idx) -> None:
        """Meta-train data: log-latency [devices, archs], arch encodings, reference indices."""
        self.log_lat = torch.as_tensor(log_lat, dtype=torch.float32)
        self.arch_x = torch.as_tensor(arch_x, dtype=torch.float32)
        self.ref_idx = torch.as_tensor(ref_idx, dtype=torch.long)

    def _sample_tasks(self, g: torch.Generator) -> torch.Tensor:
        """[tasks, archs] log-latencies of real devices and hardware-mixup devices."""
        hp, L = self.hparams, self.log_lat
        n_dev = L.shape[0]
        i = torch.randint(n_dev, (hp.tasks_per_step,), generator=g)
        j = torch.randint(n_dev, (hp.tasks_per_step,), generator=g)
        alpha = torch.rand(hp.tasks_per_step, 1, generator=g)
        mix = torch.rand(hp.tasks_per_step, 1, generator=g) < hp.mixup
        alpha = torch.where(mix, alpha, torch.ones_like(alpha))
        return alpha * L[i] + (1 - alpha) * L[j]

    def training_step(self, batch, _):
        g = torch.Generator().manual_seed(int(batch[0]))
        hp = self.hparams
        L = self._sample_tasks(g).to(self.device)
        emb, mu, sd = ref_stats(L[:, self.ref_idx.to(self.device)])
        cols = torch.randint(L.shape[1], (hp.tasks_per_step, hp.archs_per_task), generator=g)
        cols = cols.to(self.device)
        z = (torch.gather(L, 1, cols) - mu) / sd
        x = self.arch_x.to(self.device)[cols]  # [tasks, archs, n_arch]
        hw = emb[:, None, :].expand(-1, hp.archs_per_task, -1)
        pred = self(x.reshape(-1, x.shape[-1]), hw.reshape(-1, hw.shape[-1]))
        loss = nn.functional.mse_loss(pred, z.reshape(-1))
        self.log("meta_mse", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.hparams.epochs, 1))
        return [opt], [sched]
