"""Fast GEMM-only leave-one-GPU-out: the inner loop for choosing GEMM physics constants.

Per dtype (bf16 on A100-SXM, H100-SXM, L40S, B200; fp8 on the three with fp8 tables), on a
subsample of `--rows` GEMM rows per GPU and dtype: the outer score (fit on the other GPUs,
MdAPE % on the held-out one) beside the inner score (the mean over the training GPUs of fit
on the rest of them, score that one). Choose physics by the inner scores only: they never
see the held-out GPU. Use `benchmarks/operator_latency_logo.py` for the reported figures.
`--where` prints instead where the inner folds' error sits: MdAPE and the median
log(predicted / measured) per training GPU scored by tokens (M), outputs (N), depth (K) and
measured time classes, and the median log(measured / physics) beside them.
`--set NAME=V1,V2,...` runs the loop once per value of a GEMM physics constant (a number in
`physics.py`, e.g. TILE_TRAFFIC) and prints the sums side by side. `--residual` changes the
learned residual's settings (`predictor.RESIDUALS`, e.g. `none gemm/fp8.shape_weight=0.5`),
`--model-seed` its seed (the spread between seeds is the noise a change is read against);
`--lookup` prints the shape-lookup diagnostic instead (`_inner_logo.lookup_scores`).
`--param KEY.NAME=VALUE` (as in attention_inner_logo.py) sets a LightGBM parameter of one
key's residual forests (`predictor.OP_PARAMS`, e.g. `gemm/bf16.num_leaves=31`); `--dtypes`
scores those dtypes only (the sample is drawn first: the same rows as a run over both).

    .venv/bin/python benchmarks/gemm_inner_logo.py --db STORE [--rows 5000] [--trees 80]
        [--seed 1] [--set TILE_TRAFFIC=0,0.03] [--where] [--residual KEY.NAME=VALUE ...]
        [--model-seed 0] [--lookup] [--param KEY.NAME=VALUE ...] [--dtypes bf16 fp8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

from servecast.predictors.operator_latency import physics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inner_logo import (  # noqa: E402
    add_residual_args,
    fail,
    forest_params,
    nested_folds,
    nested_scores,
    physics_value,
    print_lookup,
    residual_settings,
    sampled_frame,
)

#: class edges of the `--where` breakdown: (column, upper bounds of its classes)
CLASSES = {"M": (16, 128, 1024), "N": (512, 4096), "K": (512, 4096),
           "latency_ms": (0.01, 0.05, 0.5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--trees", type=int, default=80)
    ap.add_argument("--seed", type=int, default=1, help="subsample seed")
    ap.add_argument("--set", help="NAME=V1,V2,...: a physics constant's values to compare")
    ap.add_argument("--where", action="store_true",
                    help="break the inner folds' error down by shape class instead")
    add_residual_args(ap)
    ap.add_argument("--dtypes", nargs="*", default=["bf16", "fp8"],
                    help="GEMM dtypes to score (each is its own residual key)")
    args = ap.parse_args()
    name, values = parse_set(args.set)
    print("residuals:", residual_settings(args.residual))
    print("params:", forest_params(args.params))
    frame = sampled_frame(args.db, ["gemm"], args.rows, ["device", "dtype"], args.seed)
    known = sorted(set(frame["dtype"].to_list()))
    frame = frame.filter(pl.col("dtype").is_in(args.dtypes))
    if frame.is_empty():
        fail(f"--dtypes {' '.join(args.dtypes)}: no GEMM rows of these dtypes; the store "
             f"has {', '.join(known)}")
    if args.where:
        where(frame, args.trees)
        return
    if args.lookup:
        for (_dtype,), part in frame.group_by("dtype", maintain_order=True):
            print_lookup(part, args.trees, args.model_seed)
        return
    sums = []
    for value in values:
        if name:
            setattr(physics, name, value)
            print(f"{name} = {value}")
        sums.append(run(frame, args.trees, args.model_seed))
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


def run(frame: pl.DataFrame, trees: int, seed: int = 0) -> float:
    """Print the outer and inner GEMM MdAPE (%) per dtype and held-out GPU; the inner sum
    (the mean over each fold's training GPUs)."""
    t0 = time.time()
    parts = [nested_scores(part, trees, outer_too=True, seed=seed).with_columns(
        dtype=pl.lit(dtype))
             for (dtype,), part in frame.group_by("dtype", maintain_order=True)]
    scores = pl.concat(parts)
    own = pl.col("inner") == pl.col("outer")
    table = scores.group_by("dtype", pl.col("outer").alias("held_out")).agg(
        outer=pl.col("mdape").filter(own).first(),
        inner=pl.col("mdape").filter(~own).mean()).sort("dtype", "held_out")
    with pl.Config(tbl_rows=20, float_precision=1):
        print(table)
    per = table.group_by("dtype").agg(pl.col("inner").sum()).sort("dtype").rows()
    print("inner sum per dtype: " + ", ".join(f"{d} {v:.1f}" for d, v in per))
    print(f"inner sum {table['inner'].sum():.1f}, outer sum {table['outer'].sum():.1f}; "
          f"{time.time() - t0:.0f} s", flush=True)
    return float(table["inner"].sum())


def where(frame: pl.DataFrame, trees: int) -> None:
    """Print, per dtype and `CLASSES` column, the inner folds' MdAPE % and median
    log(predicted / measured) per scored training GPU (rows of all outer folds pooled) and
    the median log(measured / physics)."""
    from servecast.predictors.operator_latency.predictor import OperatorLatencyModel

    for (dtype,), part in frame.group_by("dtype", maintain_order=True):
        preds = []
        for _outer, inner, fit, test in nested_folds(part):
            model = OperatorLatencyModel(view="relative", trees=trees).fit(fit)
            preds.append(model.predict(test).with_columns(scored=pl.lit(inner.split("_")[0])))
        out = pl.concat(preds).with_columns(
            ape=(pl.col("latency_ms_pred") / pl.col("latency_ms") - 1.0).abs() * 100.0,
            bias=(pl.col("latency_ms_pred") / pl.col("latency_ms")).log(),
            phys=(pl.col("latency_ms") / pl.col("physics_ms")).log())
        for col, edges in CLASSES.items():
            cls = pl.lit(f"{len(edges)}: {col} > {edges[-1]:g}")  # numbered: sorts in order
            for i, edge in reversed(list(enumerate(edges))):
                cls = pl.when(pl.col(col) <= edge).then(pl.lit(f"{i}: {col} <= {edge:g}")
                                                        ).otherwise(cls)
            by = out.with_columns(cls=cls).group_by("cls", "scored").agg(
                pl.len(), pl.col("ape").median(), pl.col("bias").median(),
                pl.col("phys").median())
            with pl.Config(tbl_rows=40, tbl_cols=20, float_precision=2, tbl_width_chars=200):
                print(f"{dtype} by {col}: MdAPE % / median log(pred / measured) / median "
                      "log(measured / physics) per scored GPU")
                print(by.pivot("scored", index="cls", values=["ape", "bias", "phys"],
                               sort_columns=True).sort("cls"))


if __name__ == "__main__":
    main()
