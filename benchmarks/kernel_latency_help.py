"""HELP protocol on NAS-Bench-201: meta-train on split.json's meta_train devices, adapt with
the 10 reference architectures, evaluate on the meta_valid devices (Spearman rho, MAPE)
beside FLOPs proxy, per-device linear regression and no-adaptation.

    .venv/bin/python benchmarks/kernel_latency_help.py [--db FILE] [--epochs N]

`--db FILE` reads an existing store holding the HELP trace; without it the trace is
ingested into a temporary store. A FILE that is not a store exits 2 with the fix.
Acceptance: mean Spearman >= 0.95 (HELP reports 0.932 on its meta-test devices, FLOPs 0.787).
"""

from __future__ import annotations

import argparse
import time

import polars as pl
from kernel_latency_logo import open_store


def main() -> None:
    from servecast.predictors.hardware_adaptive.config import PRESET

    ap = argparse.ArgumentParser()
    ap.add_argument("--db")
    ap.add_argument("--epochs", type=int, default=PRESET.full.epochs)
    ap.add_argument("--adapt-steps", type=int, default=PRESET.full.adapt_steps)
    args = ap.parse_args()
    # before torch: a wrong --db is refused at once
    store = open_store(args.db, [("help-nasbench201", "gpu/help_nasbench201",
                                  "help_nasbench201")])

    import torch

    from servecast.predictors.hardware_adaptive.train import train_help_model

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    _, report = train_help_model(store, PRESET.pick(False, epochs=args.epochs,
                                                       adapt_steps=args.adapt_steps))
    wall = time.perf_counter() - t0
    pl.Config.set_tbl_rows(100)
    print(report.sort("device", "method"))
    print(report.group_by("method", maintain_order=True)
          .agg(pl.col("spearman").mean(), pl.col("mape").mean()))
    print(f"meta-train + evaluation: {wall:.0f} s on CPU (shared with other jobs)")


if __name__ == "__main__":
    main()
