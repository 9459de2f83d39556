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

import numpy as np
import polars as pl

from servecast.predictors.operator_latency import physics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_latency_logo import open_store  # noqa: E402


def subsample(frame: pl.DataFrame, rows: int, seed: int = 1) -> pl.DataFrame:
    """At most `rows` GEMM rows per (device, dtype), drawn with `seed`."""
    gemm = frame.filter(pl.col("op") == "gemm")
    return pl.concat([p.sample(min(rows, p.height), seed=seed) for _k, p in
                      gemm.group_by("device", "dtype", maintain_order=True)])


def held_out_mdape(frame: pl.DataFrame, held: str, trees: int) -> float:
    """GEMM MdAPE (%) on `held` of the operator model fitted on the other devices."""
    from servecast.predictors.operator_latency.predictor import OperatorLatencyModel

    model = OperatorLatencyModel(trees=trees).fit(frame.filter(pl.col("device") != held))
    res = model.evaluate(frame.filter(pl.col("device") == held))
    return next(iter(res.values()))["model"]["mdape"]


def main() -> None:
    from servecast.predictors.operator_latency.data import operator_frame

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--trees", type=int, default=80)
    ap.add_argument("--seed", type=int, default=1, help="subsample seed")
    ap.add_argument("--set", help="NAME=V1,V2,...: a physics constant's values to compare")
    args = ap.parse_args()
    name, values = parse_set(args.set)
    store = open_store(args.db, [("aiconfigurator", "gpu/aiconfigurator", "aiconfigurator")])
    frame = subsample(operator_frame(store), args.rows, args.seed)
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
    try:
        values = [float(v) for v in vals.split(",")]
    except ValueError:
        values = []
    if not isinstance(getattr(physics, name, None), float) or not values:
        print(f"--set {text!r}: expected NAME=V1,V2,... with NAME a numeric constant of "
              "predictors/operator_latency/physics.py, e.g. TILE_TRAFFIC=0,0.03",
              file=sys.stderr)
        sys.exit(2)
    return name, values


def run(frame: pl.DataFrame, trees: int) -> float:
    """Print the outer and inner GEMM MdAPE (%) per dtype and held-out GPU; the inner sum."""
    t0 = time.time()
    rows = []
    for (dtype,), part in frame.group_by("dtype", maintain_order=True):
        devices = sorted(set(part["device"].to_list()))
        for held in devices:
            train = part.filter(pl.col("device") != held)
            inner = [held_out_mdape(train, d, trees) for d in devices if d != held]
            rows.append({"dtype": dtype, "held_out": held,
                         "outer": held_out_mdape(part, held, trees),
                         "inner": float(np.mean(inner))})
    table = pl.DataFrame(rows).sort("dtype", "held_out")
    with pl.Config(tbl_rows=20, float_precision=1):
        print(table)
    print(f"inner sum {table['inner'].sum():.1f}, outer sum {table['outer'].sum():.1f}; "
          f"{time.time() - t0:.0f} s", flush=True)
    return float(table["inner"].sum())

if __name__ == "__main__":
    main()
