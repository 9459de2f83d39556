"""Routing batches drawn from the equilibrium with a planted (beta, gamma): the known-answer
generator behind the recovery check. Loads carry finite-sample noise (multinomial tokens)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servecast.predictors.moe_congestion.equilibrium import type_choices


@dataclass
class PlantedBatches:
    """loads (B, E) token counts, quality (B, K, E), weights (B, K) type shares."""

    loads: np.ndarray
    quality: np.ndarray
    weights: np.ndarray


def planted_batches(
    beta: float,
    gamma: float,
    n_batches: int = 100,
    n_types: int = 4,
    n_experts: int = 8,
    tokens: int = 4096,
    seed: int = 0,
) -> PlantedBatches:
    """Batches of `tokens` tokens: per batch a random type mix w ~ Dirichlet(1), type quality
    q ~ N(0, 1) (shared type profile plus batch jitter), token types and expert choices drawn
    from the planted equilibrium's per-type probabilities."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_types, n_experts))
    q = base[None] + 0.5 * rng.normal(size=(n_batches, n_types, n_experts))
    w = rng.dirichlet(np.ones(n_types), size=n_batches)
    p = type_choices(q, w, beta, gamma)  # (B, K, E)
    counts = np.zeros((n_batches, n_experts))
    for b in range(n_batches):
        per_type = rng.multinomial(tokens, w[b])
        w[b] = per_type / tokens  # the realized type shares are what a user observes
        for k, n in enumerate(per_type):
            counts[b] += rng.multinomial(n, p[b, k])
    return PlantedBatches(counts, q, w)
