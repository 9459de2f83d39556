"""Fast interference demo for `servecast demo`: both Azure VM Noise tasks at reduced size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from servecast.predictors.interference import evaluate as ev
from servecast.predictors.interference.settings import PRESET
from servecast.predictors.interference.tasks import fingerprint_task, temporal_task


def run_interference_demo(store, out: str | Path, trace: str = "azure_vm_noise",
                          log: Callable[[str], None] = print) -> pl.DataFrame:
    """Train dual, gbm and the history baselines with FAST settings on reduced temporal and
    fingerprint tasks; saves models under out/interference/<task>/<model>/ and returns the
    test table (model, group, n, mae_pp, ...) with a `task` column."""
    tasks = [temporal_task(store, trace, window=4, max_windows_per_vm=400,
                           until="2024-01-01"),
             fingerprint_task(store, trace, max_instances=2000, until="2023-12-01")]
    tables = []
    for task in tasks:
        t = ev.compare(task, ("dual", "gbm", "last", "mean"), PRESET.fast,
                       out=Path(out) / "interference", log=log)
        tables.append(t.with_columns(pl.lit(task.name).alias("task")))
    return pl.concat(tables)
