"""Fast GEMM-only leave-one-GPU-out: the inner loop for choosing GEMM physics constants.

Per dtype (bf16 on A100-SXM, H100-SXM, L40S, B200; fp8 on the three with fp8 tables), on a
subsample of `--rows` GEMM rows per GPU and dtype: the outer score (fit on the other GPUs,
MdAPE % on the held-out one) beside the inner score (the mean over the training GPUs of fit
on the rest of them, score that one). Choose physics by the inner scores only: they never
see the held-out GPU. Use `benchmarks/operator_latency_logo.py` for the reported figures.
`--set NAME=V1,V2,...` runs the loop once per value of a GEMM physics constant (a number in
`physics.py`, e.g. TILE_TRAFFIC) and prints the sums side by side.

    .venv/bin/python benchmarks/gemm_inner_logo.py --db STORE [--rows 5000] [--trees 80]
        [--seed 1] [--set TILE_TRAFFIC=0,0.03]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

from servecast.predictors.operator_latency import physics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inner_logo import fail, nested_scores, physics_value, sampled_frame  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--trees", type=int, default=80)
    ap.add_argument("--seed", type=int, default=1, help="subsample seed")
    ap.add_argument("--set", help="NAME=V1,V2,...: a physics constant's values to compare")
    args = ap.parse_args()
    name, values = parse_set(args.set)
    frame = sampled_frame(args.db, ["gemm"], args.rows, ["device", "dtype"], args.seed)
    sums = []
    for value in values:
        if name:
            setattr(physics, name, value)
            print(f"{name} = {value}")
        sums.append(run(frame, args.trees))
    if name:
        print("inner sums: " + ", ".join(f"{name}={v}: {s:.1f}" for v, s in
                                          zip(values, sums, strict=True)))


def parse_set(text: str | None) -> tuple[str | None, list]:
    """(constant name, values) of `--set NAME=V1,V2`; (None, [None]) without it. Exit 2
    naming the flag on an unknown name or a value that is not a number."""
    if not text:
        return None, [None]
    name, _eq, vals = text.partition("=")
    values = [physics_value("--set", f"{name}={v}")[1] for v in vals.split(",")]
    if not values:
        fail(f"--set {text!r}: expected NAME=V1,V2,...")
    return name, values


def run(frame: pl.DataFrame, trees: int) -> float:
    """Print the outer and inner GEMM MdAPE (%) per dtype and held-out GPU; the inner sum
    (the mean over each fold's training GPUs)."""
    t0 = time.time()
    parts = [nested_scores(part, trees, outer_too=True).with_columns(dtype=pl.lit(dtype))
             for (dtype,), part in frame.group_by("dtype", maintain_order=True)]
    scores = pl.concat(parts)
    own = pl.col("inner") == pl.col("outer")
    table = scores.group_by("dtype", pl.col("outer").alias("held_out")).agg(
        outer=pl.col("mdape").filter(own).first(),
        inner=pl.col("mdape").filter(~own).mean()).sort("dtype", "held_out")
    with pl.Config(tbl_rows=20, float_precision=1):
        print(table)
    print(f"inner sum {table['inner'].sum():.1f}, outer sum {table['outer'].sum():.1f}; "
          f"{time.time() - t0:.0f} s", flush=True)
    return float(table["inner"].sum())


if __name__ == "__main__":
    main()
