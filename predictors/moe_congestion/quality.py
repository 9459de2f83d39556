"""Per-token expert quality q_te (nats; higher is better) from a `SmallMoELM`, three ways:

* oracle: minus the next-token loss with the token's first choice at the layer forced to e
  (one pass per layer and expert; each token's change seen alone, see `model.py`);
* taylor: the first-order estimate of the same quantity from one backward pass,
  -(loss_t + g_t . w_t (y_te - y_t,chosen)), g_t = d loss_t / d MoE output at t;
* router: the router's own log-probabilities (what the router believes).

`agreement` compares two estimators token by token.
"""

from __future__ import annotations

import numpy as np
import torch


def _chunks(win: torch.Tensor, size: int):
    for i in range(0, win.shape[0], size):
        yield win[i: i + size]


@torch.no_grad()
def oracle_quality(model, win: torch.Tensor, chunk: int = 64) -> np.ndarray:
    """Oracle quality (layers, tokens, E): -CE with the token forced to each expert (nats)."""
    model.eval()
    L, E = len(model.blocks), model.hparams.n_experts
    out = []
    for w in _chunks(win, chunk):
        x, y = w[:, :-1], w[:, 1:]
        model(x)
        q = torch.empty(L, x.numel(), E, device=x.device)
        for layer in range(L):
            for e in range(E):
                q[layer, :, e] = -model.token_loss(model.forced_logits(layer, e), y).reshape(-1)
        out.append(q.cpu())
    return torch.cat(out, dim=1).numpy()


def taylor_quality(model, win: torch.Tensor, chunk: int = 64) -> np.ndarray:
    """First-order quality (layers, tokens, E) from one forward/backward per chunk (nats)."""
    model.eval()
    out = []
    for w in _chunks(win, chunk):
        x, y = w[:, :-1], w[:, 1:]
        with torch.enable_grad():
            logits = model(x, detach_context=True)
            for blk in model.blocks:
                blk.moe_out.retain_grad()
            loss = model.token_loss(logits, y)
            loss.sum().backward()
        per_layer = []
        for blk in model.blocks:
            g = blk.moe_out.grad.reshape(-1, blk.moe_out.shape[-1])  # (N, d)
            last = blk.moe.last
            y_all = last["y_all"].detach()  # (N, E, d)
            chosen = y_all.gather(1, last["choices"][:, :1, None].expand(-1, 1, y_all.shape[-1]))
            delta = last["weights"][:, :1, None].detach() * (y_all - chosen)
            per_layer.append(-(loss.detach().reshape(-1, 1) + (delta * g[:, None]).sum(-1)))
        model.zero_grad(set_to_none=True)
        out.append(torch.stack(per_layer).cpu())
    return torch.cat(out, dim=1).numpy()


from servecast.predictors.moe_congestion.quality_stats import agreement, router_quality  # noqa: E402,F401
