"""How much a window's label can be predicted at all on the Azure VM Noise tasks, next to the
15 % bar of the interference issue. Usage:

    .venv/bin/python benchmarks/interference_floor.py [--db servecast.duckdb]

- temporal task: `evaluate.neighbour_floor`, the test VM's label read from its neighbouring
  labels, LATER ones included (no predictor has those), next to the bar = 0.85 x the best of
  the no-training baselines (last value, moving average) scored in the same run;
- both tasks: `evaluate.metrics_per_step`, how many measured metrics share a time step (what
  the dual-branch model's metric-interaction branch attends across).

Ingests the shared Azure VM Noise folder into --db if the trace is missing.
"""

from __future__ import annotations

import argparse
import sys
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
    args = ap.parse_args()
    store = vm_store(args.db)
    pl.Config.set_fmt_str_lengths(60)
    temporal = temporal_task(store)
    for task in (temporal, fingerprint_task(store)):
        k = ev.metrics_per_step(task)
        one = k.filter(pl.col("metrics") == 1)["share"].sum()
        print(f"\n== {task.name}: measured metrics per window step: {100 * one:.1f} % of "
              f"steps hold one (counts on >= 1 % of steps)\n{k.filter(pl.col('share') >= 0.01)}")
    table = ev.compare(temporal, ("last", "moving_average"), PRESET.fast, log=lambda _: None)
    floor = ev.neighbour_floor(temporal)
    print(f"\n== temporal: labels read from neighbouring labels (test split)\n{floor}")
    for group in ["all", *sorted(set(floor["group"]) - {"all"})]:
        base = table.filter(pl.col("group") == group).sort("mae_pp")
        best = floor.filter(pl.col("group") == group)["mae_pp"].min()
        print(f"temporal {group}: bar {0.85 * base['mae_pp'][0]:.3f} pp (0.85 x "
              f"{base['model'][0]} {base['mae_pp'][0]:.3f}); best future-seeing reference "
              f"{best:.3f} pp")
    store.close()


if __name__ == "__main__":
    main()
