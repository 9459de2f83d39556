"""The host collector: a ~10 s experiment with a CPU-bound co-runner shows a slowdown and
yields a dataset the predictor accepts; `servecast collect host-metrics` writes long rows."""

from __future__ import annotations

import os
import sys

import polars as pl
import pytest

from servecast.cli import main
from servecast.collectors.host_metrics import run_experiment
from servecast.errors import InvalidInputError
from servecast.predictors.interference import InterferencePredictor

# burns 0.3 s of CPU time: its wall time grows with the CPU share it loses to co-runners
TARGET = (f"{sys.executable} -c \"import time\nt=time.process_time()\n"
          "while time.process_time()-t<0.3: pass\"")
BUSY = f"{sys.executable} -c \"while True: pass\""
PIN = [0] if hasattr(os, "sched_setaffinity") else None


@pytest.mark.slow
def test_corunner_slows_target_and_dataset_is_well_formed(tmp_path):
    ex = run_experiment(TARGET, [BUSY, BUSY], repeats=3, interval=0.1, cpus=PIN)
    runs = ex.runs
    assert runs["condition"].to_list() == ["solo", "corun"] * 3
    assert ex.slowdown() > 1.3, runs  # two busy co-runners on the target's CPU
    mean = dict(runs.group_by("condition").agg(pl.col("perf").mean()).iter_rows())
    assert mean["corun"] < mean["solo"] - 0.15
    m = ex.metrics
    assert m.columns == ["window_id", "t", "metric", "value"]
    assert set(m["window_id"].unique()) == set(runs["window_id"])
    names = set(m["metric"].unique())
    assert {"cpu_busy_pct", "mem_used_pct", "ctx_switches_per_s", "proc_cpu_pct"} <= names
    assert ex.labels["perf"].is_between(0, 1, closed="right").all()
    metrics_file, labels_file = ex.write(tmp_path / "exp.csv")
    back = pl.read_csv(metrics_file)
    assert back.height == m.height and pl.read_csv(labels_file).height == 6
    # the generic predictor accepts the collected windows as they are
    p = InterferencePredictor("gbm", max_steps=8, gbm_trees=20, val_frac=0).fit(m, ex.labels)
    assert p.predict(m).height == 6


def test_collector_rejects_bad_commands():
    with pytest.raises(InvalidInputError, match="exited with status"):
        run_experiment(f"{sys.executable} -c \"raise SystemExit(3)\"", [BUSY], repeats=1,
                       interval=0.05)
    with pytest.raises(InvalidInputError, match="--corunner"):
        run_experiment(TARGET, [], repeats=1)


def test_cli_host_metrics(tmp_path):
    out = tmp_path / "host.csv"
    assert main(["collect", "host-metrics", "--interval", "0.5", "--duration", "1.5",
                 "--out", str(out)]) == 0
    df = pl.read_csv(out)
    assert df.columns == ["t", "metric", "value"]
    assert df["t"].n_unique() == 3 and df["metric"].n_unique() > 15
    assert main(["collect", "host-metrics", "--interval", "0", "--out", str(out)]) == 2
