"""Vidur's LLM operators on a GPU never measured: hold out one of Vidur's GPUs (A100, A40,
H100) at a time, train on everything else (NeuSight's kernels and the other Vidur GPUs'
operators; holding out the A100 also removes NeuSight's A100 boards, the same chip), predict
the held-out GPU's operators (per model, token count and tensor parallelism) from its spec.
Prints MdAPE (%) per operator, model vs roofline-only.

    .venv/bin/python benchmarks/kernel_latency_vidur.py [--db FILE] [--epochs 20]
        [--max-rows 150000] [--ensemble 3] [--threads 1]

Without --db it ingests ../shared/datasets/gpu/{neusight,vidur_profiling} into a temporary
store. What a Vidur user asks before profiling a new GPU for hours.
"""

from __future__ import annotations

import argparse
import time

import polars as pl
from kernel_latency_logo import apply_physics, model_args, open_store


def main() -> None:
    import torch

    from servecast.predictors.kernel_latency.data import VIDUR_SPECS
    from servecast.predictors.kernel_latency.evaluation import leave_one_gpu_out, logo_table
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor
    from servecast.predictors.kernel_latency.train import kernel_training_data

    args = model_args(argparse.ArgumentParser()).parse_args()
    torch.set_num_threads(args.threads)
    apply_physics(args)
    store = open_store(args.db, [("neusight", "gpu/neusight", "neusight"),
                                 ("vidur-mlp", "gpu/vidur_profiling", "vidur_mlp")])
    frame, devices = kernel_training_data(store, vidur=True)
    t0 = time.perf_counter()
    res = leave_one_gpu_out(frame, devices, lambda devices: KernelLatencyPredictor(
        devices, epochs=args.epochs, max_rows=args.max_rows, batch_size=2048,
        ensemble=args.ensemble, shape_weight=args.shape_weight),
        log=print, hold_out=sorted(VIDUR_SPECS))
    wall = time.perf_counter() - t0
    pl.Config.set_tbl_rows(200)
    pl.Config.set_float_precision(1)
    pl.Config.set_tbl_width_chars(140)
    vidur = res.filter(pl.col("op").str.starts_with("vidur."))
    print("per held-out GPU and Vidur operator (MdAPE %, model | roofline-only):")
    print(vidur.with_columns(pl.col("held_out").str.slice(0, 30)))
    print("mean over the held-out GPUs:")
    print(logo_table(vidur))
    ops = vidur.group_by("held_out").agg(pl.col("mdape").median(),
                                         pl.col("roofline_mdape").median())
    print("median over the operators, per held-out GPU:")
    print(ops.sort("held_out"))
    print(f"{len(VIDUR_SPECS)} folds in {wall:.0f} s")


if __name__ == "__main__":
    main()
