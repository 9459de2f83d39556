"""The CloudFormer-style network as a plain torch module (the runtime loads it without
Lightning).

Input: values [B, T, M] (robust z-scores, 0 where masked) and mask [B, T, M].

- temporal branch: one token per step ([values, mask] of all metrics -> d), learned position
  embedding, Transformer encoder over steps (steps with no observation are padding), pooled
  as the mean of the observed steps concatenated with the last step;
- metric branch: one token per metric ([its series, its mask] over the steps -> d, plus a
  learned metric embedding), Transformer encoder across metrics (metrics never observed in
  the window are padding), masked mean pool;
- fusion MLP -> perf.

`branches="across"` replaces the metric branch by attention across metrics AT EACH STEP
(concurrent counters: one token per (step, metric) = [value, mask] -> d plus a learned
metric embedding, an encoder across the metrics observed at that step, masked mean -> the
step's token), followed by the temporal encoder over those step tokens.

`skip=True` (the default of new models) adds a wide-and-deep skip path and a target
normalization, so that the network can represent persistence exactly and the attention
branches learn the residual on top of it:

- per-metric window statistics computed from values + mask alone (last observed z, masked
  mean z, observed fraction; nothing assumes metric names or a sampling rate) feed a linear
  "wide" term and, projected to d, the fusion head;
- output perf = y_center + y_scale * (wide(stats) + head(fused)), with y_center / y_scale
  (median and mean absolute deviation of the training labels) stored as buffers; the last
  head layer starts at zero, so training starts from the linear model of window statistics.

`skip=False` is the original network (sigmoid of the head), kept so models saved before
the skip path still load. `branches="temporal"` keeps only the temporal branch (the
single-branch baseline).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_STATS = 3  # per metric: last observed z, masked mean z, observed fraction
N_GLOBAL = 2  # per window: mean z over all observed cells, mean of the last observed z
BRANCHES = ("dual", "temporal", "across")


def _encoder(d: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout,
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    w = keep.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def window_stats(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, M] -> [B, N_STATS * M + N_GLOBAL]: last observed value, masked mean and
    observed fraction of every metric (0 for a metric never observed in the window), then the
    window-level means over metrics (an overall slowdown level, whatever the metric set)."""
    m = mask.to(values.dtype)
    t = values.shape[1]
    cnt = m.sum(1)
    mean = (values * m).sum(1) / cnt.clamp_min(1.0)
    # index of the last observed step per metric (0 when never observed: value is 0 there)
    steps = torch.arange(1, t + 1, device=values.device, dtype=values.dtype).view(1, t, 1)
    last_idx = (m * steps).argmax(1, keepdim=True)
    last = torch.gather(values * m, 1, last_idx).squeeze(1)
    seen = (cnt > 0).to(values.dtype)
    n_seen = seen.sum(1, keepdim=True).clamp_min(1.0)
    glob = [(values * m).sum((1, 2)).unsqueeze(1) / cnt.sum(1, keepdim=True).clamp_min(1.0),
            last.sum(1, keepdim=True) / n_seen]
    return torch.cat([last, mean, cnt / t, *glob], -1)


class InterferenceNet(nn.Module):
    """Dual-branch (or temporal-only) Transformer regressor of perf."""

    def __init__(self, n_metrics: int, max_steps: int, d_model: int = 64, heads: int = 4,
                 layers: int = 2, dropout: float = 0.1, branches: str = "dual",
                 skip: bool = False):
        super().__init__()
        if branches not in BRANCHES:
            raise ValueError(f"branches must be one of {BRANCHES}, not {branches!r}")
        self.branches, self.skip = branches, bool(skip)
        self.step_in = nn.Linear(2 * n_metrics, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_steps, d_model))
        self.temporal = _encoder(d_model, heads, layers, dropout)
        width = 2 * d_model
        if branches == "dual":
            self.metric_in = nn.Linear(2 * max_steps, d_model)
            self.metric_emb = nn.Parameter(torch.zeros(1, n_metrics, d_model))
            self.across = _encoder(d_model, heads, layers, dropout)
            width += d_model
        if branches == "across":
            self.cell_in = nn.Linear(2, d_model)
            self.metric_emb = nn.Parameter(torch.zeros(1, 1, n_metrics, d_model))
            self.across = _encoder(d_model, heads, layers, dropout)
        if self.skip:
            n_stats = N_STATS * n_metrics + N_GLOBAL
            self.wide = nn.Linear(n_stats, 1)
            self.stats_in = nn.Sequential(nn.Linear(n_stats, d_model), nn.GELU())
            width += d_model
            self.register_buffer("y_center", torch.tensor(1.0))
            self.register_buffer("y_scale", torch.tensor(1.0))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d_model), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(d_model, 1))
        nn.init.normal_(self.pos, std=0.02)
        if branches in ("dual", "across"):
            nn.init.normal_(self.metric_emb, std=0.02)
        if self.skip:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide.bias)

    def set_target(self, center: float, scale: float) -> None:
        """Target normalization from the training labels (skip models only)."""
        self.y_center.fill_(float(center))
        self.y_scale.fill_(max(float(scale), 1e-4))

    def encode(self, values: torch.Tensor, mask: torch.Tensor,
               seen: torch.Tensor | None = None) -> torch.Tensor:
        """The temporal encoder's per-step output [B, T, d] of (values, mask) [B, T, M];
        `seen` [B, T]: the steps not padded (default: the steps with an observation).
        The cross-run pretraining (`pretrain`) trains and reads this part alone."""
        m = mask.to(values.dtype)
        if self.branches == "across":
            tok = self._steps_across(values * m, mask) + self.pos
        else:
            tok = self.step_in(torch.cat([values * m, m], -1)) + self.pos
        return self.temporal(tok, src_key_padding_mask=~(mask.any(-1) if seen is None
                                                          else seen))

    def forward_z(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The normalized output (skip models): (perf - y_center) / y_scale, shape [B]."""
        steps_seen = mask.any(-1)  # [B, T]
        h = self.encode(values, mask, steps_seen)
        feats = [_masked_mean(h, steps_seen), h[:, -1]]
        if self.branches == "dual":
            m = mask.to(values.dtype)
            metric_seen = mask.any(1)  # [B, M]
            mt = torch.cat([(values * m).transpose(1, 2), m.transpose(1, 2)], -1)
            g = self.across(self.metric_in(mt) + self.metric_emb,
                            src_key_padding_mask=~metric_seen)
            feats.append(_masked_mean(g, metric_seen))
        if not self.skip:
            return self.head(torch.cat(feats, -1)).squeeze(-1)
        stats = window_stats(values, mask)
        feats.append(self.stats_in(stats))
        return (self.wide(stats) + self.head(torch.cat(feats, -1))).squeeze(-1)

    def _steps_across(self, vm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, M] masked values -> [B, T, d]: attention across the metrics of each step
        (a step with no observation keeps its cells unmasked; the temporal encoder pads it)."""
        b, t, n = vm.shape
        cells = self.cell_in(torch.stack([vm, mask.to(vm.dtype)], -1)) + self.metric_emb
        keep = mask | ~mask.any(-1, keepdim=True)
        g = self.across(cells.reshape(b * t, n, -1), src_key_padding_mask=~keep.reshape(b * t, n))
        return _masked_mean(g, keep.reshape(b * t, n)).reshape(b, t, -1)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """perf, shape [B] (in (0, 1) without skip; unbounded with skip: callers clip)."""
        z = self.forward_z(values, mask)
        if not self.skip:
            return torch.sigmoid(z)
        return self.y_center + self.y_scale * z


class NetEnsemble(nn.Module):
    """Several InterferenceNets of one architecture trained from different seeds; the output
    is the mean of their perf predictions (still the dual-branch model, with less variance)."""

    def __init__(self, members: list[InterferenceNet]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(values, mask) for m in self.members]).mean(0)


@torch.no_grad()
def predict_net(net: nn.Module, values: np.ndarray, mask: np.ndarray,
                batch: int = 4096) -> np.ndarray:
    """perf predictions for arrays on CPU, in batches."""
    out = []
    for i in range(0, len(values), batch):
        out.append(net(torch.from_numpy(values[i:i + batch]),
                       torch.from_numpy(mask[i:i + batch])).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
