"""Inner leave-one-GPU-out over attention rows only (or the all-reduce's, `--ops
allreduce`): the fast loop that selects attention physics without looking at a held-out GPU.

For each outer fold (one of aiconfigurator's four GPUs held out and NOT read), every one of
the three training GPUs is left out in turn: the operator model is fitted on the other two
and scored on it. Prints the inner MdAPE (%) per outer fold, op and inner GPU, and the
median over the inner GPUs per fold and op: the number to select physics constants by; and
the inner sum, over folds, of the mean over the inner GPUs (the statistic of
`gemm_inner_logo.py`, which residual settings are chosen by).

    .venv/bin/python benchmarks/attention_inner_logo.py [--db FILE] [--rows 3000]
        [--trees 60] [--ops attn_prefill attn_decode allreduce] [--set NAME=VALUE ...]
        [--param KEY.NAME=VALUE ...] [--residual KEY.NAME=VALUE ...] [--model-seed 0]
        [--lookup]

`--rows`: rows drawn per (GPU, op) (seeded); `--set` overrides a constant of
`servecast.predictors.operator_latency.physics` for this run (e.g. `--set SOFTMAX_OPS=4`),
so candidate values are compared by the same command; `--ops` scores one op alone (a
constant of one op's physics needs no fits of the other); `--param` sets a LightGBM
parameter of one op's residual (`predictor.OP_PARAMS`, e.g.
`--param attn_decode.num_leaves=7` or `attn_decode.objective=huber`); `--residual` its
residual settings (`predictor.RESIDUALS`, e.g. `none attn_decode.shape_weight=0.75`;
`none` clears the shipped ones), `--model-seed` the fits' seed; `--lookup` prints the
shape-lookup diagnostic instead (`_inner_logo.lookup_scores`). Without --db it ingests
../shared/datasets/gpu/aiconfigurator into a temporary store.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inner_logo import (  # noqa: E402
    add_residual_args,
    forest_params,
    nested_scores,
    physics_value,
    print_lookup,
    residual_settings,
    sampled_frame,
)

OPS = ["attn_prefill", "attn_decode"]  # the default; the all-reduce on request
CHOICES = [*OPS, "allreduce"]


def override(pairs: list[str]) -> dict[str, float]:
    """Apply NAME=VALUE overrides to the physics module (exit 2 on an unknown name)."""
    from servecast.predictors.operator_latency import physics

    done = dict(physics_value("--set", pair) for pair in pairs)
    for name, value in done.items():
        setattr(physics, name, value)
    return done


def inner_scores(frame: pl.DataFrame, trees: int, seed: int = 0) -> pl.DataFrame:
    """(outer, inner, op, mdape) for every outer fold and inner GPU of `frame`."""
    scores = nested_scores(frame, trees, seed=seed)
    return scores.select("outer", "inner", op=pl.col("key").str.split("/").list.first(),
                         mdape="mdape")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--trees", type=int, default=60)
    ap.add_argument("--ops", nargs="+", default=OPS, choices=CHOICES)
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    add_residual_args(ap)
    args = ap.parse_args()
    residuals = residual_settings(args.residual)  # before --param, which checks them
    print("overrides:", override(args.set) or "none", forest_params(args.params) or "")
    print("residuals:", residuals)
    frame = sampled_frame(args.db, args.ops, args.rows, ["device", "op"], seed=0)
    t0 = time.time()
    if args.lookup:
        print_lookup(frame, args.trees, args.model_seed)
        print(f"{time.time() - t0:.0f} s")
        return
    scores = inner_scores(frame, args.trees, args.model_seed)
    with pl.Config(tbl_rows=100, float_precision=1):
        print(scores.pivot("inner", index=["op", "outer"], values="mdape").sort("op", "outer"))
        fold = scores.group_by("op", "outer").agg(pl.col("mdape").median()).sort("op", "outer")
        print(fold.pivot("outer", index="op", values="mdape"))
    per_op = {op: float(np.mean(fold.filter(pl.col("op") == op)["mdape"].to_numpy()))
              for op in args.ops}
    print("mean over folds of the inner median MdAPE:",
          " ".join(f"{op} {v:.2f}" for op, v in per_op.items()))
    # the GEMM loop's statistic (and the residual settings'): it weighs the worst GPU in
    sums = scores.group_by("op", "outer").agg(pl.col("mdape").mean()).group_by("op").agg(
        pl.col("mdape").sum()).sort("op")
    print("inner sum (over folds, of the mean over inner GPUs):",
          " ".join(f"{op} {v:.1f}" for op, v in sums.iter_rows()))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
