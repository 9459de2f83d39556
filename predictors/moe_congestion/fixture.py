"""A small MoE-congestion fitting problem for the conformance tests (registry `fixture`).

Two layers of routing batches drawn from the logit equilibrium with a planted (beta, gamma)
(synthetic.planted_batches: 4 token types, 8 experts, multinomial token counts), as the long
frame [layer, batch, expert, type, weight, quality, load]; 30 train / 10 test batches."""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.predictors.registry import Fixture


def routing_frame(n_batches: int, seed: int) -> pl.DataFrame:
    """Long frame of two layers (planted gamma 4 and 16) of `n_batches` batches each."""
    from servecast.predictors.moe_congestion.synthetic import planted_batches

    parts = []
    for layer, gamma in ((0, 4.0), (1, 16.0)):
        d = planted_batches(2.0, gamma, n_batches=n_batches, n_types=4, tokens=2048,
                            seed=seed + 10 * layer)
        B, K, E = d.quality.shape
        b, k, e = np.meshgrid(np.arange(B), np.arange(K), np.arange(E), indexing="ij")
        parts.append(pl.DataFrame({
            "layer": layer, "batch": b.ravel(), "expert": e.ravel(), "type": k.ravel(),
            "weight": d.weights[b, k].ravel(), "quality": d.quality.ravel(),
            "load": d.loads[b, e].ravel()}))
    return pl.concat(parts)


def fixture(seed: int = 0) -> Fixture:
    from servecast.predictors.moe_congestion.game import CongestionGame

    return Fixture(make=lambda: CongestionGame(n_bootstrap=0, seed=seed),
                   train=routing_frame(30, seed), test=routing_frame(10, seed + 1),
                   columns=("load_pred",))
