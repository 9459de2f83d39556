"""Small-MoE validation of gamma_eff: runs trained with increasing auxiliary-loss alpha.

Trains one small MoE per alpha on ShareGPT text (skipped when RUN_DIR/run.json exists), then
prints per alpha: training seconds, final gamma_eff per layer with bootstrap CI (monotonicity
check), the held-out L1 table (uniform, mean_loads, softmax vs single-type congestion,
multi-type), quality-estimator agreement, and the gamma_eff trajectory with phases.

    .venv/bin/python benchmarks/moe_alpha_sweep.py --out /tmp/moe_sweep [--alphas 0 0.001 ...]
        [--steps 1200 --snapshots 6 --eval-windows 144]  (as measured: 155-316 s per run on
        one shared CPU core incl. snapshots; --steps 300 --snapshots 5 ~60 s per run idle)
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
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--snapshots", type=int, default=6)
    ap.add_argument("--eval-windows", type=int, default=192)
    ap.add_argument("--batch-windows", type=int, default=3)
    ap.add_argument("--train-conversations", type=int, default=600)
    ap.add_argument("--types", type=int, default=8)
    ap.add_argument("--cv-types", type=int, nargs="*", default=[1, 2, 4, 8],
                    help="candidate K for the CV-selected model (training batches only)")
    ap.add_argument("--trajectory-bootstrap", type=int, default=0,
                    help="bootstrap refits per trajectory point (the last checkpoint always "
                    "gets --bootstrap)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(200)
    pl.Config.set_float_precision(4)

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
                cfg = RunConfig(alpha=a, steps=args.steps, snapshots=args.snapshots,
                                eval_windows=args.eval_windows, batch_windows=args.batch_windows,
                                train_conversations=args.train_conversations,
                                eval_conversations=100)
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
        traj = trajectory(run, n_types=args.types, n_bootstrap=args.trajectory_bootstrap)
        trajs.append(traj)
        last = traj.filter(pl.col("step") == traj["step"].max())
        finals.append(last)
        step, path = checkpoints(run)[-1]
        snap = load_snapshot(path)
        for layer in range(n_layers(snap)):
            for shrink in (True, False):
                cmps.append(compare(snap, layer, n_types=args.types, shrink=shrink,
                                    n_bootstrap=args.bootstrap if shrink else 0,
                                    cv_types=tuple(args.cv_types) if shrink else None)
                            .with_columns(alpha=pl.lit(a), shrink=pl.lit(shrink)))
        agrees.append(quality_agreement(snap).with_columns(alpha=pl.lit(a)))
    if not finals:
        return
    traj_all = pl.concat(trajs)
    print("\n== final gamma_eff per alpha and layer (multi-type, 90% bootstrap CI) ==")
    cmp = pl.concat(cmps)
    ci = cmp.filter(pl.col("shrink") & (pl.col("model") == "congestion_multi")).select(
        "alpha", "layer", "gamma", "gamma_lo", "gamma_hi", "beta")
    ci_single = cmp.filter(pl.col("shrink") & (pl.col("model") == "congestion")).select(
        "alpha", "layer", gamma_single="gamma", single_lo="gamma_lo", single_hi="gamma_hi")
    fin = (pl.concat(finals).drop("gamma", "gamma_lo", "gamma_hi", "beta", "gamma_single")
           .join(ci, on=["alpha", "layer"]).join(ci_single, on=["alpha", "layer"])
           .sort(["layer", "alpha"])
           .with_columns(gamma_over_beta=pl.col("gamma") / pl.col("beta")))  # nats per share
    print(f"(last checkpoint; CIs from {args.bootstrap} batch-bootstrap refits; "
          "gamma_over_beta = congestion price in quality units (nats) per unit load share)")
    print(fin.select("alpha", "layer", "gamma", "gamma_lo", "gamma_hi", "beta",
                     "gamma_over_beta", "gamma_single", "single_lo", "single_hi", "maxvio",
                     "eval_loss"))
    for (layer,), part in fin.group_by("layer", maintain_order=True):
        for col in ("gamma", "gamma_over_beta"):
            g = part.sort("alpha")[col].to_list()
            mono = all(x <= y for x, y in zip(g, g[1:], strict=False))
            print(f"layer {layer}: {col} non-decreasing in alpha: {mono} "
                  f"({', '.join(f'{x:.3g}' for x in g)})")
    for shrink in (True, False):
        print(f"\n== held-out L1 of load shares at the last checkpoint (type quality "
              f"{'shrunk to pooled profile' if shrink else 'raw batch means'}) ==")
        wide = cmp.filter(pl.col("shrink") == shrink).pivot(
            on="model", index=["alpha", "layer"], values="heldout_l1").sort(["alpha", "layer"])
        wide = wide.with_columns(
            multi_vs_single=1 - pl.col("congestion_multi") / pl.col("congestion"))
        print(wide)
        if "congestion_cv" in wide.columns:
            ks = cmp.filter(pl.col("shrink") & (pl.col("model") == "congestion_cv")).sort(
                "alpha", "layer")["types"].to_list()
            gain = 1 - wide["congestion_cv"].mean() / wide["congestion"].mean()
            print(f"congestion_cv: K chosen by 3-fold CV on training batches per (alpha, layer)"
                  f" = {ks}; held-out L1 mean {wide['congestion_cv'].mean():.3f}, improvement "
                  f"over single-type {gain:.1%} (of means)")
        print(f"mean held-out L1: softmax {wide['softmax'].mean():.3f}, congestion "
              f"{wide['congestion'].mean():.3f}, congestion_multi "
              f"{wide['congestion_multi'].mean():.3f}, mean_loads {wide['mean_loads'].mean():.3f}"
              f"; multi vs single improvement: mean of ratios "
              f"{wide['multi_vs_single'].mean():.1%}, of means "
              f"{1 - wide['congestion_multi'].mean() / wide['congestion'].mean():.1%}")
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
