"""Numpy-only helpers for per-token quality arrays: router log-probabilities and the
agreement between two quality estimators."""

from __future__ import annotations

import numpy as np


def router_quality(logits: np.ndarray) -> np.ndarray:
    """Router log-probabilities (..., E) from router logits."""
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, axis=-1), axis=-1).astype(float)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Token-level agreement of two quality arrays (..., E): mean per-token Spearman rank
    correlation over experts, share of tokens with the same best expert, and the Pearson
    correlation of per-token-centred values."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    ra, rb = _ranks(a2), _ranks(b2)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    spear = np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), 0.0)
    ca = a2 - a2.mean(1, keepdims=True)
    cb = b2 - b2.mean(1, keepdims=True)
    pearson = float((ca * cb).sum() / np.sqrt((ca**2).sum() * (cb**2).sum()))
    return {"spearman": float(spear.mean()),
            "top1": float((a2.argmax(1) == b2.argmax(1)).mean()), "pearson": pearson}
