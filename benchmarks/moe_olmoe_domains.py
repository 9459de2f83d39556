"""Shared OLMoE-1B-7B / Mixtral-8x7B expert counts: imbalance per layer and domain, and
leave-one-domain-out load prediction vs the uniform and mean-of-domains baselines.

    .venv/bin/python benchmarks/moe_olmoe_domains.py [--db /tmp/moe_bench.duckdb]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from servecast.analytics.moe import imbalance, shares
from servecast.config import data_dir
from servecast.predictors.moe_congestion.domains import domain_transfer, transfer_summary
from servecast.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, default=Path("/tmp/moe_bench.duckdb"))
    args = ap.parse_args()
    with Store(args.db) as store:
        store.ingest("olmoe-routing", [data_dir() / "moe" / "olmoe_routing"],
                     trace="olmoe_routing")
        imb = imbalance(store, "olmoe_routing")
        tr = domain_transfer(shares(store, "olmoe_routing"))
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(200)
    pl.Config.set_float_precision(4)
    print(imb.drop("checkpoint"))
    print(imb.group_by("model", "assignment", "layer").agg(
        pl.col("maxvio", "gini", "norm_entropy", "cv").mean(), pl.col("dead_experts").max())
        .sort("model", "assignment", "layer"))
    print("leave-one-domain-out held-out L1 per layer (mean over held-out domains):")
    print(tr.group_by("model", "assignment", "layer").agg(
        pl.len().alias("domains"), pl.col("l1_uniform", "l1_mean_domains", "l1_congestion")
        .mean(), pl.col("gamma").median()).sort("model", "assignment", "layer"))
    print("per held-out domain (mean over layers):")
    print(tr.group_by("model", "assignment", "held_out").agg(
        pl.col("l1_uniform", "l1_mean_domains", "l1_congestion").mean())
        .sort("model", "assignment", "held_out"))
    print("summary:")
    print(transfer_summary(tr))


if __name__ == "__main__":
    main()
