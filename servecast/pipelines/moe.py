"""MoE orchestration: `fit_from_run` (a `CongestionGame` from a small-MoE run, for the demo
and `servecast moe fit`) and the fast end-to-end demo `moe_demo` (analytics of the routing
counts, a tiny small-MoE run with its gamma_eff trajectory, and a saved congestion model)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from servecast.analytics.moe import imbalance, shares
from servecast.analytics.moe_plots import imbalance_plot, trajectory_plot
from servecast.predictors.moe_congestion.config import PRESET
from servecast.predictors.moe_congestion.domains import domain_transfer, transfer_summary
from servecast.predictors.moe_congestion.game import CongestionGame
from servecast.predictors.moe_congestion.run import train_small_moe
from servecast.predictors.moe_congestion.trajectory import phases, trajectory


def moe_demo(store=None, trace: str = "olmoe_routing", out: str | Path = "out/moe",
             log=print, steps: int | None = None, n_bootstrap: int = 5
             ) -> dict[str, pl.DataFrame]:
    """Fast demo: imbalance + leave-one-domain-out on `trace` (if in `store`), a tiny small-MoE
    run (the fast preset, `steps` steps if given; CPU time: docs/results.md#demo) with its
    gamma_eff trajectory (point estimates), and a saved model (bootstrap CIs from
    `n_bootstrap` refits) under OUT/models/moe_congestion. Returns the result frames
    (imbalance, transfer if the trace is in the store; trajectory, phases, params)."""
    out = Path(out)
    res: dict[str, pl.DataFrame] = {}
    if store is not None and trace in store.traces()["trace"].to_list():
        res["imbalance"] = imbalance(store, trace)
        res["transfer"] = transfer_summary(domain_transfer(shares(store, trace)))
        imbalance_plot(res["imbalance"], out / "imbalance.png")
        log(f"moe: imbalance of {trace}: {res['imbalance'].height} (model, domain, layer) rows")
    run = train_small_moe(out / "run", PRESET.pick(True, steps=steps), log=log)
    res["trajectory"] = trajectory(run, n_bootstrap=0)
    res["phases"] = phases(res["trajectory"])
    trajectory_plot(res["trajectory"], res["phases"], out / "trajectory.png")
    game = fit_from_run(run, n_bootstrap=n_bootstrap)
    game.save(out / "models" / "moe_congestion")
    res["params"] = game.params
    log(f"moe: gamma_eff trajectory and model written under {out}")
    return res


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
