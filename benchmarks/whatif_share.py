"""The restated what-if criterion on the Azure conversation trace (issue 24, item 5).

  .venv/bin/python benchmarks/whatif_share.py [--trace azure_conv] [--seeds 5] [--max-rows N]

The held-out part of the trace (the output-length split's test part), output lengths
predicted by a metadata model trained on the rest (fast settings), replayed at the
criterion's loads (`simulator.CRITERION_LOADS`) with 5 seeds each (`simulator.whatif_share`);
per policy (`simulator.replay.CRITERION_POLICIES`) the mean share of oracle SJF's mean-JCT
gain over FCFS with its t-interval (`share_summary`), then the share at each load (mean over
seeds), and the wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from _stores import llm_store

    from servecast.simulator import heldout, share_summary, whatif_share

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="azure_conv")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-rows", type=int, default=0)
    args = ap.parse_args()
    store = llm_store((args.trace,))
    test, p50, p90 = heldout(store, args.trace, max_rows=args.max_rows or None)
    store.close()
    t0 = time.perf_counter()
    reps = whatif_share(test, p50, p90, seeds=args.seeds)
    wall = time.perf_counter() - t0
    pl.Config.set_tbl_rows(50)
    print(f"== {args.trace}: {test.height} held-out requests, "
          f"{reps.select('load', 'seed').unique().height} replays "
          f"({wall:.0f} s)")
    print(share_summary(reps))
    print(reps.group_by("load", "policy", maintain_order=True).agg(
        pl.col("share").mean().alias("mean_share"), pl.col("share").min().alias("min"),
        pl.col("share").max().alias("max"),
        ((pl.col("fcfs_jct_s") - pl.col("oracle_jct_s")) / pl.col("fcfs_jct_s")).mean()
        .alias("oracle_gain_vs_fcfs")))


if __name__ == "__main__":
    main()
