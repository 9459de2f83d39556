"""A small MoE language model (LightningModule) with a Switch-style auxiliary balancing loss.

Pre-norm transformer blocks, causal attention, and an MoE feed-forward layer per block whose
router is `moe.gate` (an `nn.Linear`, as in Hugging Face Mixtral/OLMoE). Top-1 routing weighs
the expert output by its router probability (Switch); top-k > 1 renormalizes over the chosen
experts (Mixtral). Loss = next-token cross-entropy + alpha * mean over layers of the Switch
load-balancing loss E * sum_e f_e * P_e (f_e: share of assignments, P_e: mean router prob).

For the quality estimators, blocks take an optional `kv` residual: attention then reads keys
and values of the *other* positions from `kv` and only the diagonal from the live stream.
With `kv` = the unperturbed residual this gives the exact effect of changing one token's
routing (causal attention: positions < t are unaffected); with `kv` = the detached live stream
the gradient of sum_t loss_t w.r.t. the MoE output at t equals d loss_t / d output_t.
"""

from __future__ import annotations

import math

import pytorch_lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Causal multi-head self-attention with an optional off-diagonal key/value source."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def _split(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        return [t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v)]

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self._split(x)
        if kv is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            _, k2, v2 = self._split(kv)
            scale = 1.0 / math.sqrt(D // self.heads)
            s = (q @ k2.transpose(-1, -2)) * scale
            diag = (q * k).sum(-1) * scale
            eye = torch.eye(T, dtype=torch.bool, device=x.device)
            s = torch.where(eye, diag.unsqueeze(-1).expand_as(s), s)
            s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), -1e9)
            a = s.softmax(-1)
            out = a @ v2 + a.diagonal(dim1=-2, dim2=-1).unsqueeze(-1) * (v - v2)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class MoE(nn.Module):
    """E experts (2-layer GELU MLPs, evaluated densely: tiny models) behind the router `gate`."""

    def __init__(self, d: int, d_ff: int, n_experts: int, top_k: int):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.gate = nn.Linear(d, n_experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(n_experts, d, d_ff) / math.sqrt(d))
        self.b1 = nn.Parameter(torch.zeros(n_experts, d_ff))
        self.w2 = nn.Parameter(torch.randn(n_experts, d_ff, d) / math.sqrt(d_ff))
        self.last: dict = {}

    def experts(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert's output (N, E, d) for tokens x (N, d)."""
        h = F.gelu(torch.einsum("nd,edf->nef", x, self.w1) + self.b1)
        return torch.einsum("nef,efd->ned", h, self.w2)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e's output (n, d) for tokens x (n, d)."""
        return F.gelu(x @ self.w1[e] + self.b1[e]) @ self.w2[e]

    def forward(self, x: torch.Tensor, force: int | None = None,
                dense: bool = False) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d). `force`: replace each token's first choice by this expert
        (keeping its gate weight). `dense`: evaluate every expert on every token and keep the
        outputs (`last["y_all"]`, for the Taylor estimator); else only routed tokens are
        computed. Stores probs, choices and weights in `last`."""
        B, T, D = x.shape
        flat = x.reshape(-1, D)
        probs = self.gate(flat).softmax(-1)
        top_v, top_i = probs.topk(self.top_k, dim=-1)
        weights = top_v if self.top_k == 1 else top_v / top_v.sum(-1, keepdim=True)
        if force is not None:
            top_i = top_i.clone()
            if self.top_k > 1:  # keep the choices distinct
                dup = top_i[:, 1:] == force
                top_i[:, 1:] = torch.where(dup, top_i[:, :1].expand_as(dup), top_i[:, 1:])
            top_i[:, 0] = force
        self.last = {"probs": probs, "choices": top_i, "weights": weights}
        if dense:
            y_all = self.experts(flat)
            self.last["y_all"] = y_all
            picked = y_all.gather(1, top_i.unsqueeze(-1).expand(-1, -1, D))
            return (picked * weights.unsqueeze(-1)).sum(1).view(B, T, D)
        out = torch.zeros_like(flat)
        for e in range(self.n_experts):
            tok, slot = (top_i == e).nonzero(as_tuple=True)
            if tok.numel():
                y = self.expert(e, flat[tok]) * weights[tok, slot].unsqueeze(-1)
                out = out.index_add(0, tok, y)
        return out.view(B, T, D)

    def balance_loss(self) -> torch.Tensor:
        """Switch load-balancing loss E * sum_e f_e P_e of the last forward (1 when uniform)."""
        probs, choices = self.last["probs"], self.last["choices"]
        f = torch.bincount(choices.reshape(-1), minlength=self.n_experts).float()
        f = f / choices.numel()
        return self.n_experts * (f * probs.mean(0)).sum()


class Block(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int, n_experts: int, top_k: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.moe = MoE(d, d_ff, n_experts, top_k)

    def forward(self, x, kv=None, force=None, dense=False):
        x = x + self.attn(self.ln1(x), None if kv is None else self.ln1(kv))
        self.moe_out = self.moe(self.ln2(x), force, dense)
        return x + self.moe_out


class SmallMoELM(L.LightningModule):
    """Decoder-only MoE LM. alpha: auxiliary balancing-loss coefficient; lr: AdamW peak rate;
    steps: total optimizer steps (cosine schedule after `warmup` steps)."""

    def __init__(self, vocab: int = 2048, d: int = 64, heads: int = 4, layers: int = 2,
                 d_ff: int = 128, n_experts: int = 8, top_k: int = 1, context: int = 64,
                 alpha: float = 0.0, lr: float = 3e-3, steps: int = 400, warmup: int = 30):
        super().__init__()
        self.save_hyperparameters()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads, d_ff, n_experts, top_k) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))

    def logits_from(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(x))

    def forward(self, idx: torch.Tensor, detach_context: bool = False) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V). `detach_context`: attention reads
        other positions' keys/values from a detached stream and every expert is evaluated
        (per-token gradients for the Taylor estimator)."""
        x = self.embed(idx)
        self.residuals = []
        for blk in self.blocks:
            self.residuals.append(x)
            x = blk(x, kv=x.detach() if detach_context else None, dense=detach_context)
        return self.logits_from(x)

    def forced_logits(self, layer: int, expert: int) -> torch.Tensor:
        """Logits with every token's first choice at `layer` forced to `expert`, each token's
        change seen alone (other positions' keys/values from the last unforced `forward`)."""
        x = self.blocks[layer](self.residuals[layer], force=expert)
        for j in range(layer + 1, len(self.blocks)):
            x = self.blocks[j](x, kv=self.residuals[j])
        return self.logits_from(x)

    def token_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy (B, T), nats."""
        return F.cross_entropy(logits.transpose(1, 2), target, reduction="none")

    def balance_loss(self) -> torch.Tensor:
        """Mean over the layers of their Switch balance loss in the last forward (1: uniform)."""
        return torch.stack([b.moe.balance_loss() for b in self.blocks]).mean()

    def training_step(self, batch, _):
        (win,) = batch
        logits = self(win[:, :-1])
        ce = self.token_loss(logits, win[:, 1:]).mean()
        bal = self.balance_loss()
        loss = ce + self.hparams.alpha * bal
        self.log_dict({"ce": ce, "balance": bal}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        steps, warm = self.hparams.steps, self.hparams.warmup

        def rate(s):
            if s < warm:
                return (s + 1) / warm
            frac = min(1.0, (s - warm) / max(1, steps - warm))
            return 0.1 + 0.45 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
        return [opt], [{"scheduler": sched, "interval": "step"}]
