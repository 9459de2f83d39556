"""Small-MoE validation of gamma_eff: runs trained with increasing auxiliary-loss alpha.

Trains one small MoE per alpha on ShareGPT text (skipped when RUN_DIR/run.json exists), then
prints per alpha: training seconds, final gamma_eff per layer with bootstrap CI (monotonicity
check), the held-out L1 table (uniform, mean_loads, softmax vs single-type congestion,
multi-type), quality-estimator agreement, and the gamma_eff trajectory with phases.

    .venv/bin/python benchmarks/moe_alpha_sweep.py --out /tmp/moe_sweep [--alphas 0 0.001 ...]
    .venv/bin/python benchmarks/moe_alpha_sweep.py --out /tmp/moe_sweep --report-only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

ALPHAS = (0.0, 1e-3, 1e-2, 1e-1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/moe_sweep"))
    ap.add_argument("--alphas", type=float, nargs="*", default=list(ALPHAS))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(160)

    import torch

    torch.set_num_threads(1)
    from servecast.predictors.moe_congestion.analysis import (
        compare,
        load_snapshot,
        n_layers,
        quality_agreement,
    )
    from servecast.predictors.moe_congestion.run import RunConfig, checkpoints, train_small_moe
    from servecast.predictors.moe_congestion.trajectory import phases, trajectory

    runs = {a: args.out / f"alpha_{a:g}" for a in args.alphas}
    if not args.report_only:
        for a, run in runs.items():
            if not (run / "run.json").is_file():
                cfg = RunConfig(alpha=a, steps=args.steps, snapshots=4, eval_windows=96,
                                batch_windows=3, train_conversations=300, eval_conversations=60)
                train_small_moe(run, cfg, log=print)
    finals, cmps, agrees, trajs = [], [], [], []
    for a, run in runs.items():
        if not (run / "run.json").is_file():
            continue
        meta = json.loads((run / "run.json").read_text())
        print(f"alpha={a:g}: train {meta['seconds']['train_incl_snapshots']:.0f}s incl. "
              f"snapshots {meta['seconds']['snapshots']:.0f}s (CPU, shared machine), final ce "
              f"{meta['final'].get('ce', float('nan')):.3f}, vocab coverage "
              f"{meta['vocab_coverage']:.3f}")
        traj = trajectory(run, n_bootstrap=args.bootstrap)
        trajs.append(traj)
        last = traj.filter(pl.col("step") == traj["step"].max())
        finals.append(last)
        step, path = checkpoints(run)[-1]
        snap = load_snapshot(path)
        for layer in range(n_layers(snap)):
            cmps.append(compare(snap, layer).with_columns(alpha=pl.lit(a)))
        agrees.append(quality_agreement(snap).with_columns(alpha=pl.lit(a)))
    if not finals:
        return
    traj_all = pl.concat(trajs)
    print("\n== final gamma_eff per alpha and layer (multi-type, 90% bootstrap CI) ==")
    fin = pl.concat(finals).sort(["layer", "alpha"])
    print(fin.select("alpha", "layer", "gamma", "gamma_lo", "gamma_hi", "beta", "gamma_single",
                     "maxvio", "eval_loss"))
    for (layer,), part in fin.group_by("layer", maintain_order=True):
        g = part.sort("alpha")["gamma"].to_list()
        mono = all(x <= y for x, y in zip(g, g[1:], strict=False))
        print(f"layer {layer}: gamma_eff non-decreasing in alpha: {mono}")
    print("\n== held-out L1 of load shares at the last checkpoint ==")
    cmp = pl.concat(cmps)
    wide = cmp.pivot(on="model", index=["alpha", "layer"], values="heldout_l1").sort(
        ["alpha", "layer"])
    print(wide.with_columns(
        multi_vs_single=1 - pl.col("congestion_multi") / pl.col("congestion")))
    print("\n== quality estimators vs oracle (last checkpoint) ==")
    print(pl.concat(agrees))
    print("\n== gamma_eff trajectory ==")
    print(traj_all.select("alpha", "step", "layer", "gamma", "gamma_lo", "gamma_hi",
                          "l1_multi", "l1_single", "l1_softmax", "maxvio"))
    for (a,), part in traj_all.group_by("alpha", maintain_order=True):
        print(f"phases alpha={a:g}:")
        print(phases(part))
    if args.out:
        traj_all.write_csv(args.out / "trajectories.csv")
        cmp.write_csv(args.out / "comparison.csv")
        from servecast.analytics.moe_plots import alpha_plot

        print("figure:", alpha_plot(fin, args.out / "gamma_vs_alpha.png"))


if __name__ == "__main__":
    main()
