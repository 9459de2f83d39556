"""How far the measured behaviour of one GPU transfers to another: for each of NeuSight's five
training GPUs held out, the MdAPE (%) of predicting its latencies from the other four GPUs'
measurements of the very same shapes (see `evaluation.transfer_bounds`), next to nothing else.

    .venv/bin/python benchmarks/kernel_latency_transfer.py [--db FILE]

Reference for `kernel_latency_logo.py`: a spec-only model predicts shapes it has seen on the
other GPUs, so it should not expect to beat `shape_mean`; the `_scaled` columns even fit one
constant on the held-out GPU itself.

It also prints, per GPU, op and band of measured latency, the median fraction of the
learner's roofline the bmm / linear kernels reach (`evaluation.efficiency_bands`): where
one GPU's fraction differs from the other four's, no spec-only model can follow it.
"""

from __future__ import annotations

import argparse

import polars as pl
from kernel_latency_logo import open_store


def main() -> None:
    from servecast.predictors.kernel_latency import data
    from servecast.predictors.kernel_latency.evaluation import efficiency_bands, transfer_bounds

    ap = argparse.ArgumentParser()
    ap.add_argument("--db")
    args = ap.parse_args()
    store = open_store(args.db, [("neusight", "gpu/neusight", "neusight")])
    frame, devices = data.neusight_frame(store), data.device_specs(store)
    res = transfer_bounds(frame, devices)
    pl.Config.set_tbl_rows(200)
    pl.Config.set_float_precision(1)
    pl.Config.set_tbl_width_chars(140)
    main_ops = pl.col("op").is_in(["all", "bmm", "linear"])
    print("per held-out GPU (MdAPE %):")
    print(res.filter(main_ops).with_columns(pl.col("held_out").str.slice(0, 24)))
    print("mean over held-out GPUs (MdAPE %):")
    print(res.group_by("op").agg(pl.col("shape_mean", "shape_mean_scaled", "best_chip_scaled")
                                 .mean()).sort("op"))
    pl.Config.set_float_precision(2)
    eff = efficiency_bands(frame, devices).with_columns(pl.col("held_out").str.slice(0, 12))
    print("median fraction of the power-limited roofline reached, per latency band:")
    print(eff.pivot(on="held_out", index=["op", "band"], values="efficiency"))


if __name__ == "__main__":
    main()
