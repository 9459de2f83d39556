"""The co-location default model (`colocation_gbm.ColocationGBM`) at prediction time: CPU
seconds (median over `--repeat` calls, `time.process_time`, one torch thread) of
`ColocationGBM.load`, of `predict` on the held-out runs and on one run, and of `runtime()`.

    .venv/bin/python benchmarks/colocation_latency.py [--db FILE] [--model DIR] [--repeat 15]

The task: three NTUA series (Memento_V01, Fight_Club_V01 train, Memento_V02 held out),
ingested into `--db` (a temporary store by default) when missing. `--model DIR` reads the
model saved there, or fits one (2 inner folds, 3 seeds, 60 rounds, a 20-step network
member when the inner setting folds choose it) and saves it there first, so that two
versions of the code can be timed on the same saved model. The run prints whether the
model holds the network member (the load then reads it too).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from servecast.config import data_dir
from servecast.predictors.interference import colocation_gbm as cg
from servecast.predictors.interference.colocation import colocation_task
from servecast.store import Store

SERIES = ("Memento_V01", "Memento_V02", "Fight_Club_V01")
TRACE = "ntua_three"


def cpu_s(call, repeat: int) -> float:
    """Median CPU seconds of `call()` over `repeat` calls."""
    out = []
    for _ in range(repeat):
        c0 = time.process_time()
        call()
        out.append(time.process_time() - c0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=None, help="store (default: a temporary one)")
    ap.add_argument("--model", default=None, help="saved model folder (fitted if empty)")
    ap.add_argument("--repeat", type=int, default=15, help="calls timed per measurement")
    args, tmp = ap.parse_args(), Path(tempfile.mkdtemp())
    store = Store(args.db or tmp / "ntua.duckdb")
    if TRACE not in set(store.sql("SELECT trace FROM traces")["trace"]):
        store.ingest("ntua-interference", [data_dir() / "vm/ntua_interference" / s
                                           for s in SERIES], trace=TRACE)
    task = colocation_task(store, traces=[TRACE], test_series=["Memento_V02"])
    store.close()
    torch.set_num_threads(1)
    path = Path(args.model or tmp / "model")
    if not (path / "model_card.json").is_file():
        c0 = time.process_time()
        cg.ColocationGBM(inner_k=2, seeds=3, rounds=60, net_train_steps=20).fit(task).save(path)
        print(f"fitted and saved {path} ({time.process_time() - c0:.0f} s CPU)")
    test = task.windows.filter(pl.col("split") == "test").select("window_id")
    metrics = cg.with_references(task).join(test, on="window_id", how="semi")
    one = metrics.filter(pl.col("window_id") == metrics["window_id"][0])
    m = cg.ColocationGBM.load(path)
    print(f"model {path}: network member {'yes' if m.net_member is not None else 'no'}; "
          f"{test.height} held-out runs")
    for name, call, n in (("load", lambda: cg.ColocationGBM.load(path), args.repeat),
                          (f"predict {test.height} runs", lambda: m.predict(metrics),
                           max(3, args.repeat // 2)),
                          ("predict 1 run", lambda: m.predict(one), 3 * args.repeat),
                          ("runtime()", m.runtime, 3 * args.repeat)):
        print(f"{name:22s} {1e3 * cpu_s(call, n):8.2f} ms CPU (median of {n})")


if __name__ == "__main__":
    main()
