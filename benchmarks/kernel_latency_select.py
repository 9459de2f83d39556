"""Choose the kernel model's power constant, training length and view weight by nested
leave-one-GPU-out on NeuSight's five training GPUs (`evaluation.nested_selection`): for each
held-out GPU, every (power constant, epochs, shape-view weight) is scored by a
leave-one-GPU-out inside the other four,
and the held-out GPU is predicted with the winner. Prints the chosen settings, the nested
MdAPE (%) per GPU and op, and the plain leave-one-out table of every setting (the one to pick
the shipped defaults from: all five GPUs are validation data for the GPUs never measured).

    .venv/bin/python benchmarks/kernel_latency_select.py --db STORE [--powers inf,40,60,80]
        [--lengths E1,E2,...] [--weights W1,W2,...] [--ops bmm,linear] [--epochs 8]
        [--max-rows 40000] [--ensemble 1] [--threads 1]

`--lengths` are the member epochs to choose from (default: `--epochs` alone): a held-out GPU
is an extrapolation in device space, and a longer fit of the same rows can fit the training
GPUs' own quirks more closely than the behaviour that transfers.

Small members by default (one per view, 40,000 rows, 8 epochs) and only the `--ops` rows
(the ops scored), so the 2 x settings x 15 fits stay affordable on a CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from kernel_latency_logo import model_args, open_store


def fixed_length_nested(res: pl.DataFrame) -> pl.DataFrame:
    """Per epochs value: the nested MdAPE (%) per held-out GPU and op when only the power and
    the weight are chosen by the inner score (the length held fixed), from
    `nested_selection`'s rows."""
    inner = (res.group_by("epochs", "held_out", "power", "shape_weight")
             .agg(pl.col("inner").first())
             .sort("inner").group_by("epochs", "held_out").first())
    picked = res.join(inner.drop("inner"), on=["epochs", "held_out", "power", "shape_weight"])
    return (picked.pivot(on="op", index=["epochs", "held_out"], values="mdape")
            .sort("epochs", "held_out"))


def main() -> None:
    import torch

    from servecast.predictors.kernel_latency import data
    from servecast.predictors.kernel_latency.evaluation import nested_selection
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    ap = model_args(argparse.ArgumentParser())
    ap.set_defaults(epochs=8, max_rows=40_000, ensemble=1)
    ap.add_argument("--powers", default="inf,40,60,80",
                    help="sustained fp32 GFLOP/s per W of TDP to try (inf: no power limit)")
    ap.add_argument("--lengths", default=None,
                    help="member epochs to try (default: --epochs alone)")
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1",
                    help="shape-view weights to try")
    ap.add_argument("--ops", default="bmm,linear", help="ops trained on and scored")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ops = args.ops.split(",")
    store = open_store(args.db, [("neusight", "gpu/neusight", "neusight")])
    frame = data.neusight_frame(store).filter(pl.col("op").is_in(ops))
    devices = data.device_specs(store)
    t0 = time.perf_counter()
    res = nested_selection(
        frame, devices, lambda devices, view, epochs=args.epochs: KernelLatencyPredictor(
            devices, epochs=epochs, max_rows=args.max_rows, batch_size=2048,
            ensemble=args.ensemble, views=(view,), seed=args.seed),
        powers=[float(x) for x in args.powers.split(",")],
        weights=[float(x) for x in args.weights.split(",")], ops=ops, log=print,
        epochs=[int(x) for x in (args.lengths or str(args.epochs)).split(",")])
    wall = time.perf_counter() - t0
    pl.Config.set_tbl_rows(200)
    pl.Config.set_float_precision(1)
    pl.Config.set_tbl_width_chars(160)
    res = res.with_columns(pl.col("held_out").str.slice(0, 24),
                           pl.col("shape_weight").round(2).cast(pl.Utf8))
    chosen = res.filter(pl.col("chosen"))
    print("nested: settings chosen inside the other four GPUs, MdAPE % of the held-out GPU:")
    print(chosen.pivot(on="op", index=["held_out", "power", "epochs", "shape_weight", "inner"],
                       values="mdape"))
    nested = chosen.group_by("op").agg(pl.col("mdape").mean()).sort("op")
    print("nested mean over held-out GPUs: " + ", ".join(
        f"{r['op']} {r['mdape']:.1f}" for r in nested.to_dicts()))
    if res["epochs"].n_unique() > 1:
        print("nested with the length fixed (power and weight still chosen inside):")
        print(fixed_length_nested(res))
    plain = (res.group_by("power", "epochs", "shape_weight", "op").agg(pl.col("mdape").mean())
             .pivot(on="op", index=["power", "epochs", "shape_weight"], values="mdape")
             .with_columns(mean=pl.mean_horizontal(ops)).sort("power", "epochs", "shape_weight"))
    print("plain leave-one-out, mean over the five held-out GPUs, per setting:")
    print(plain)
    best = plain.row(int(np.argmin(plain["mean"].to_numpy())), named=True)
    print(f"best setting on the five GPUs: power {best['power']:g}, epochs {best['epochs']}, "
          f"shape weight "
          f"{best['shape_weight']} ({best['mean']:.1f}); {wall:.0f} s")


if __name__ == "__main__":
    main()
