"""Small-MoE validation of gamma_eff: runs trained with increasing auxiliary-loss alpha.

Trains one small MoE per alpha on ShareGPT text (skipped when RUN_DIR/run.json exists), then
prints per alpha: training seconds; the held-out protocol (conversation-disjoint batches, how
much their composition varies); final gamma_eff per layer with bootstrap CI (monotonicity
check; --gamma-quality, default oracle; fitted on ALL batches of the final snapshot - no
held-out split, the characterization predicts nothing - with --gamma-bootstrap refits; with
--final-windows N on a larger snapshot of N eval windows from each run's saved final model,
computed without retraining; plus the other estimators' multi-type gamma on the split); per
quality estimator (--quality, default oracle taylor router) the held-out L1 table (uniform,
mean_loads, type_mix, softmax vs single-type congestion, multi-type with K fixed and K by CV)
with the estimator's default type-quality shrinkage and the other one; a summary over alpha x
layer; quality-estimator agreement; the gamma_eff trajectory with phases.

    .venv/bin/python benchmarks/moe_alpha_sweep.py --out /tmp/moe_sweep2 --steps 1200 \
        --snapshots 6 --eval-windows 192   (trains, then reports;
        --train-only / --report-only)
    .venv/bin/python benchmarks/moe_alpha_sweep.py --out /tmp/moe_sweep2 --steps 1200 \
        --snapshots 6 --eval-windows 192 --report-only --final-windows 2649 \
        --gamma-bootstrap 20 --quality oracle   (gamma_eff on all the batches of each run's
        held-out conversations; run times in docs/results.md)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl

from servecast.predictors.moe_congestion.analysis import DEFAULT_QUALITY, QUALITIES

ALPHAS = (0.0, 1e-3, 1e-2, 1e-1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/moe_sweep"))
    ap.add_argument("--alphas", type=float, nargs="*", default=list(ALPHAS))
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--bootstrap", type=int, default=10)
    ap.add_argument("--snapshots", type=int, default=6)
    ap.add_argument("--eval-windows", type=int, default=192)
    ap.add_argument("--batch-windows", type=int, default=3)
    ap.add_argument("--train-conversations", type=int, default=600)
    ap.add_argument("--types", type=int, default=8)
    ap.add_argument("--quality", nargs="*", default=list(QUALITIES), choices=QUALITIES,
                    help="quality estimators compared on held-out L1")
    ap.add_argument("--gamma-quality", default=DEFAULT_QUALITY, choices=QUALITIES,
                    help="quality of the gamma_eff tables (final CIs, trajectory)")
    ap.add_argument("--cv-types", type=int, nargs="*",
                    default=[1, 2, 4, 8, 16, 32, 64, 128, 256],
                    help="candidate K for the CV-selected model (training batches only); up to "
                    "256 because CV chose the largest K of {1..16} and of {1..64} in several "
                    "cells, while 512 scored worse than 256 where 256 won")
    ap.add_argument("--final-windows", type=int, default=0,
                    help="gamma_eff table on a larger final snapshot: N eval windows of the "
                    "run's held-out conversations under its saved final model (model.pt), "
                    "no retraining; cached in RUN_DIR/final/windows_N.npz (0: last checkpoint)")
    ap.add_argument("--gamma-bootstrap", type=int, default=20,
                    help="batch-bootstrap refits of the all-batch gamma_eff table")
    ap.add_argument("--trajectory-bootstrap", type=int, default=0,
                    help="bootstrap refits per trajectory point (the last checkpoint always "
                    "gets --bootstrap)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--train-only", action="store_true", help="train missing runs, no report")
    args = ap.parse_args()
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(200)
    pl.Config.set_float_precision(4)

    import torch

    torch.set_num_threads(1)
    from servecast.predictors.moe_congestion.analysis import (
        compare,
        default_shrink,
        gamma_all_batches,
        load_snapshot,
        n_layers,
        protocol_stats,
        quality_agreement,
    )
    from servecast.predictors.moe_congestion.decomposition import (
        NATS_QUALITIES,
        decompose,
        small_moe_aux_coef,
    )
    from servecast.predictors.moe_congestion.run import (
        RunConfig,
        checkpoints,
        final_snapshot,
        train_small_moe,
    )
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
    if args.train_only:
        return
    finals, cmps, agrees, trajs, protos, alls = [], [], [], [], [], []
    for a, run in runs.items():
        if not (run / "run.json").is_file():
            continue
        meta = json.loads((run / "run.json").read_text())
        print(f"alpha={a:g}: train {meta['seconds']['train_incl_snapshots']:.0f}s incl. "
              f"snapshots {meta['seconds']['snapshots']:.0f}s (CPU, shared machine), final ce "
              f"{meta['final'].get('ce', float('nan')):.3f}, vocab coverage "
              f"{meta['vocab_coverage']:.3f}", flush=True)
        traj = trajectory(run, quality=args.gamma_quality, n_types=args.types,
                          n_bootstrap=args.trajectory_bootstrap, all_batches=True)
        trajs.append(traj)
        last = traj.filter(pl.col("step") == traj["step"].max())
        finals.append(last)
        step, path = checkpoints(run)[-1]
        snap = load_snapshot(path)
        for layer in range(n_layers(snap)):
            protos.append({"alpha": a, "layer": layer,
                           **protocol_stats(snap, layer, n_types=args.types)})
            for quality in args.quality:
                # the estimator's default shrinkage gets CV-chosen K and bootstrap CIs; the
                # other variant (sensitivity) only the fixed-K models
                for shrink in (default_shrink(quality), not default_shrink(quality)):
                    main = shrink == default_shrink(quality)
                    cmps.append(compare(snap, layer, quality, n_types=args.types, shrink=shrink,
                                        n_bootstrap=args.bootstrap if main else 0,
                                        cv_types=(tuple(args.cv_types) or None) if main
                                        else None)
                                .with_columns(alpha=pl.lit(a), main=pl.lit(main)))
        agrees.append(quality_agreement(snap).with_columns(alpha=pl.lit(a)))
        # gamma_eff characterization: every batch of the final snapshot, bootstrap CIs
        t0 = time.perf_counter()
        big = snap
        if args.final_windows:
            big = load_snapshot(final_snapshot(run, args.final_windows, log=print))
        t1 = time.perf_counter()
        for layer in range(n_layers(big)):
            games = gamma_all_batches(big, layer, args.gamma_quality, args.types,
                                      args.gamma_bootstrap).with_columns(
                alpha=pl.lit(a), windows=pl.lit(len(big["batch"]) // meta["config"]["context"]))
            if args.gamma_quality in NATS_QUALITIES:  # the aux loss's part of gamma_eff
                games = decompose(games, small_moe_aux_coef(a, n_layers(big)),
                                  meta["config"]["n_experts"])
            alls.append(games)
        print(f"alpha={a:g}: gamma_eff on all batches: snapshot {t1 - t0:.0f}s, fits "
              f"{time.perf_counter() - t1:.0f}s ({args.gamma_bootstrap} bootstrap refits)",
              flush=True)
    if not finals:
        return
    traj_all = pl.concat(trajs)
    print("\n== held-out protocol (last checkpoint) ==")
    print("batches = --batch-windows consecutive 64-token eval windows of conversations "
          "unseen in LM training (random sample of windows, kept in corpus order); >= 1/3 of "
          "the batches held out, conversation-disjoint (batches sharing a conversation are "
          "held out together; seeded); types, quality prior and beta/gamma are fitted on "
          "training batches only. type_share_var / load_var: between-batch variance over the "
          "multinomial variance of one common mixture (1 = batches differ only by sampling); "
          "noise_floor_l1: L1 that exact expected loads would still incur from sampling")
    print(pl.DataFrame(protos))
    cmp = pl.concat(cmps)
    gq = (pl.col("quality") == args.gamma_quality) & pl.col("main")
    ga = pl.concat(alls)
    split_cols = [c for c in ("gamma_explicit", "gamma_explicit_lo", "gamma_explicit_hi",
                              "gamma_implicit") if c in ga.columns]
    ci = ga.filter(pl.col("model") == "congestion_multi").select(
        "alpha", "layer", "windows", "batches", "gamma", "gamma_lo", "gamma_hi", "gamma_se",
        "beta", "beta_lo", "beta_hi", "gamma_over_beta", "train_l1", *split_cols)
    ci_single = ga.filter(pl.col("model") == "congestion").select(
        "alpha", "layer", gamma_single="gamma", single_lo="gamma_lo", single_hi="gamma_hi")
    split = cmp.filter(gq & (pl.col("model") == "congestion_multi")).select(
        "alpha", "layer", gamma_split="gamma", split_lo="gamma_lo", split_hi="gamma_hi")
    last = pl.concat(finals).select("alpha", "layer", "maxvio", "eval_loss")
    fin = (ci.join(ci_single, on=["alpha", "layer"])
           .join(split, on=["alpha", "layer"], how="left")
           .join(last, on=["alpha", "layer"]).sort(["layer", "alpha"]))
    src = (f"{args.final_windows}-window snapshot of each run's saved final model"
           if args.final_windows else "last checkpoint")
    print(f"\n== final gamma_eff per alpha and layer (multi-type K = {args.types}, "
          f"{args.gamma_quality} quality, fitted on ALL batches of the {src}; 90% CI from "
          f"{args.gamma_bootstrap} batch-bootstrap refits) ==")
    print("gamma_over_beta = congestion price in quality units (nats) per unit load share; "
          "gamma_single = single-type game (1000 = fit bound); gamma_split = multi-type gamma "
          "on the training batches of the held-out split of the last checkpoint (CI from "
          f"{args.bootstrap} refits); maxvio / eval_loss of the last checkpoint")
    print(fin.select("alpha", "layer", "windows", "batches", "gamma", "gamma_lo", "gamma_hi",
                     "beta", "beta_lo", "beta_hi", "gamma_over_beta", "gamma_single",
                     "gamma_split", "split_lo", "split_hi", "maxvio", "eval_loss"))
    if split_cols:
        print("gamma_eff = gamma_explicit + gamma_implicit (decomposition.py): explicit = "
              "beta x alpha / layers x experts, the auxiliary loss's price per unit load share "
              "in logit units (CI from beta's)")
        print(fin.select("alpha", "layer", "gamma", *split_cols))
    for (layer,), part in fin.group_by("layer", maintain_order=True):
        part = part.sort("alpha")
        for col in ("gamma", "gamma_over_beta", "gamma_split", *split_cols[:1]):
            g = part[col].to_list()
            mono = all(x <= y for x, y in zip(g, g[1:], strict=False))
            print(f"layer {layer}: {col} non-decreasing in alpha: {mono} "
                  f"({', '.join(f'{x:.3g}' for x in g)})")
        for col in ("gamma", *split_cols[:1]):
            lo, hi = part[f"{col}_lo"].to_list(), part[f"{col}_hi"].to_list()
            steps = ["up (CIs disjoint)" if lo[i + 1] > hi[i] else
                     "down (CIs disjoint)" if hi[i + 1] < lo[i] else "CIs overlap"
                     for i in range(len(lo) - 1)]
            print(f"layer {layer}: {col} between consecutive alphas: {'; '.join(steps)}")
    for quality in args.quality:
        if quality == args.gamma_quality:
            continue
        part = cmp.filter((pl.col("quality") == quality) & pl.col("main")
                          & (pl.col("model") == "congestion_multi")).sort("layer", "alpha")
        print(f"\n-- multi-type gamma_eff with {quality} quality (K = {args.types}, 90% CI) --")
        print(part.select("alpha", "layer", "gamma", "gamma_lo", "gamma_hi", "beta"))
        for (layer,), p in part.group_by("layer", maintain_order=True):
            g = p["gamma"].to_list()
            print(f"layer {layer}: non-decreasing in alpha: "
                  f"{all(x <= y for x, y in zip(g, g[1:], strict=False))}")
    models = [m for m in ("uniform", "mean_loads", "type_mix", "softmax", "congestion",
                          "softmax_multi", "congestion_multi", "type_mix_cv", "congestion_cv")
              if m in cmp["model"].unique().to_list()]
    summary = []
    for quality in args.quality:
        for main in (True, False):
            part = cmp.filter((pl.col("quality") == quality) & (pl.col("main") == main))
            shrink = part["shrink"][0]
            wide = part.pivot(on="model", index=["alpha", "layer"],
                              values="heldout_l1").sort(["alpha", "layer"])
            wide = wide.with_columns(
                multi_vs_single=1 - pl.col("congestion_multi") / pl.col("congestion"))
            print(f"\n== held-out L1 of load shares, {quality} quality, type quality "
                  f"{'shrunk to pooled profile' if shrink else 'raw batch means'} ==")
            print(wide.select("alpha", "layer", *[m for m in models if m in wide.columns],
                              "multi_vs_single"))
            row = {"quality": quality, "shrink": shrink, "main": main,
                   **{m: float(wide[m].mean()) for m in models if m in wide.columns}}
            row["multi_vs_single"] = 1 - row["congestion_multi"] / row["congestion"]
            if main and "congestion_cv" in row:
                row["cv_vs_single"] = 1 - row["congestion_cv"] / row["congestion"]
                row["cv_types"] = str(part.filter(pl.col("model") == "congestion_cv").sort(
                    "alpha", "layer")["types"].to_list())
            summary.append(row)
    print(f"\n== SUMMARY: held-out L1 (mean over alpha x layer; K fixed = {args.types}, "
          f"congestion_cv: K in {args.cv_types} by 3-fold CV on the training batches; "
          "improvements are of the means) ==")
    print(pl.DataFrame(summary))
    print("\n== quality estimators vs oracle (last checkpoint) ==")
    print(pl.concat(agrees))
    print("\n== gamma_eff trajectory ==")
    print(traj_all.select("alpha", "step", "layer", "gamma", "gamma_lo", "gamma_hi",
                          "l1_multi", "l1_single", "l1_softmax", "maxvio"))
    print("gamma_all: the same game fitted on all 64 batches of each checkpoint (no split); "
          "gamma_all_lo/hi with --trajectory-bootstrap refits")
    print(traj_all.select("alpha", "step", "layer", "gamma_all", "gamma_all_lo",
                          "gamma_all_hi", "beta_all", "gamma_single_all"))
    for (a,), part in traj_all.group_by("alpha", maintain_order=True):
        for value in ("gamma", "gamma_all"):
            print(f"phases alpha={a:g} ({value}):")
            print(phases(part, value))
    if args.out:
        traj_all.write_csv(args.out / "trajectories.csv")
        cmp.write_csv(args.out / "comparison.csv")
        fin.write_csv(args.out / "gamma_all_batches.csv")
        from servecast.analytics.moe_plots import alpha_plot

        print("figure:", alpha_plot(fin, args.out / "gamma_vs_alpha.png"))


if __name__ == "__main__":
    main()
