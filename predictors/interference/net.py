"""The CloudFormer-style network as a plain torch module (the runtime loads it without
Lightning).

Input: values [B, T, M] (robust z-scores, 0 where masked) and mask [B, T, M].

- temporal branch: one token per step ([values, mask] of all metrics -> d), learned position
  embedding, Transformer encoder over steps (steps with no observation are padding), pooled
  as the mean of the observed steps concatenated with the last step;
- metric branch: one token per metric ([its series, its mask] over the steps -> d, plus a
  learned metric embedding), Transformer encoder across metrics (metrics never observed in
  the window are padding), masked mean pool;
- fusion MLP -> sigmoid: perf in (0, 1).

`branches="temporal"` keeps only the temporal branch (the single-branch baseline).
"""

from __future__ import annotations

import torch
from torch import nn


def _encoder(d: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout,
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    w = keep.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class InterferenceNet(nn.Module):
    """Dual-branch (or temporal-only) Transformer regressor of perf in (0, 1)."""

    def __init__(self, n_metrics: int, max_steps: int, d_model: int = 64, heads: int = 4,
                 layers: int = 2, dropout: float = 0.1, branches: str = "dual"):
        super().__init__()
        if branches not in ("dual", "temporal"):
            raise ValueError(f"branches must be 'dual' or 'temporal', not {branches!r}")
        self.branches = branches
        self.step_in = nn.Linear(2 * n_metrics, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_steps, d_model))
        self.temporal = _encoder(d_model, heads, layers, dropout)
        width = 2 * d_model
        if branches == "dual":
            self.metric_in = nn.Linear(2 * max_steps, d_model)
            self.metric_emb = nn.Parameter(torch.zeros(1, n_metrics, d_model))
            self.across = _encoder(d_model, heads, layers, dropout)
            width += d_model
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d_model), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(d_model, 1))
        nn.init.normal_(self.pos, std=0.02)
        if branches == "dual":
            nn.init.normal_(self.metric_emb, std=0.02)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """perf in (0, 1), shape [B]."""
        m = mask.to(values.dtype)
        steps_seen = mask.any(-1)  # [B, T]
        tok = self.step_in(torch.cat([values * m, m], -1)) + self.pos
        h = self.temporal(tok, src_key_padding_mask=~steps_seen)
        feats = [_masked_mean(h, steps_seen), h[:, -1]]
        if self.branches == "dual":
            metric_seen = mask.any(1)  # [B, M]
            mt = torch.cat([(values * m).transpose(1, 2), m.transpose(1, 2)], -1)
            g = self.across(self.metric_in(mt) + self.metric_emb,
                            src_key_padding_mask=~metric_seen)
            feats.append(_masked_mean(g, metric_seen))
        return torch.sigmoid(self.head(torch.cat(feats, -1)).squeeze(-1))
