"""The model-fitting step of the MoE demo and CLI: a `CongestionGame` from a small-MoE run
(the demo itself, which also draws the analytics, is `servecast.moe_demo`)."""

from __future__ import annotations

from pathlib import Path

from servecast.predictors.moe_congestion.game import CongestionGame


def fit_from_run(run_dir: str | Path, step: int | None = None, quality: str | None = None,
                 n_types: int = 8, n_bootstrap: int = 20) -> CongestionGame:
    """Multi-type CongestionGame fitted on every batch of one checkpoint (default: the last),
    per layer (type qualities shrunk toward the pooled type profiles, `QualityPrior`, where
    `default_shrink(quality)`), ready to `save` for the Estimator."""
    from servecast.errors import InvalidInputError
    from servecast.predictors.moe_congestion.analysis import (
        DEFAULT_QUALITY,
        load_snapshot,
        n_layers,
        typed_batches,
    )
    from servecast.predictors.moe_congestion.run import checkpoints

    quality = quality or DEFAULT_QUALITY
    cks = dict(checkpoints(run_dir))
    step = max(cks) if step is None else step
    if step not in cks:
        raise InvalidInputError(f"{run_dir}: no checkpoint at step {step} (has {sorted(cks)})")
    snap = load_snapshot(cks[step])
    loads, quals, types = {}, {}, {}
    for layer in range(n_layers(snap)):
        b = typed_batches(snap, layer, quality, n_types)["multi"]
        loads[layer], quals[layer], types[layer] = b.loads, b.quality, b.types
    game = CongestionGame(n_bootstrap=n_bootstrap).fit_arrays(loads, quals, types)
    game.card.update({"data": {"run_dir": str(run_dir), "step": step, "quality": quality,
                               "types": n_types},
                      "split": {"rule": "all batches of the checkpoint"}})
    return game
