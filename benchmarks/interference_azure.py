"""Interference acceptance benchmark on Azure VM Noise: both tasks, every model, test MAE in
percentage points of perf per SKU next to the baselines and CloudFormer's 7.8 % (different
data). Usage:

    .venv/bin/python benchmarks/interference_azure.py [--db servecast.duckdb] [--fast]
        [--task temporal|fingerprint|both] [--out out/interference]

Ingests the shared Azure VM Noise folder into --db if the trace is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _stores import vm_store  # noqa: E402

from servecast.predictors.interference import evaluate as ev  # noqa: E402
from servecast.predictors.interference.settings import PRESET  # noqa: E402
from servecast.predictors.interference.tasks import fingerprint_task, temporal_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="servecast.duckdb")
    ap.add_argument("--task", default="both", choices=["temporal", "fingerprint", "both"])
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    store = vm_store(args.db)
    names = ["temporal", "fingerprint"] if args.task == "both" else [args.task]
    settings = PRESET.pick(args.fast)
    pl.Config.set_tbl_rows(60)
    for name in names:
        t0 = time.perf_counter()
        task = (temporal_task if name == "temporal" else fingerprint_task)(store)
        print(f"\n== {name}: built in {time.perf_counter() - t0:.0f} s")
        print(task.summary())
        print(f"settings: {settings}")
        table = ev.compare(task, ev.MODEL_ORDER, settings, out=args.out)
        print(table)
        for group in ["all", *sorted(set(table["group"]) - {"all"})]:
            g = ev.gain(table, group)
            h = ev.gain(table, group, exclude=("temporal",))
            print(f"{name} {group}: dual {g['dual']:.2f} pp vs best baseline "
                  f"{g['best_baseline']} {g['best']:.2f} pp -> {100 * g['gain']:.1f} % lower "
                  f"(bar: 15 %); vs best non-ablation baseline {h['best_baseline']} "
                  f"{h['best']:.2f} pp -> {100 * h['gain']:.1f} % lower; CloudFormer "
                  f"{ev.CLOUDFORMER_MAE_PP} pp on other data")
    store.close()


if __name__ == "__main__":
    main()
