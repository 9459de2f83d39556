"""The network member of the co-location model's unseen-settings regime: the temporal
network (`InterferencePredictor(model=NET)`) trained on a co-location task's windows with
fixed settings (`net_settings`: the fast preset, `train_steps` optimizer steps of
`NET_BATCH` rows, the last `NET_STEPS` samples of each run), the same in the inner setting
folds and in the final fit. `colocation_gbm.select` scores "the unseen-settings GBM alone"
against "the mean of that GBM and this network" on the inner setting folds; only when the
mean wins does `ColocationGBM` train the network on all its training runs and save it in
`colocation_runtime.member_dir` (read by `runtime.Runtime`: torch, no Lightning, at prediction)."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from servecast.predictors.interference.colocation_runtime import NET
from servecast.predictors.interference.settings import PRESET, TrainSettings
from servecast.predictors.interference.tasks import Task

NET_TRAIN_STEPS = 150
NET_BATCH = 64
NET_STEPS = 10

def net_settings(train_steps: int = NET_TRAIN_STEPS) -> TrainSettings:
    """The member's training settings: the fast preset (d_model 32, one layer, one seed)
    with a budget of `train_steps` optimizer steps of NET_BATCH rows."""
    return dataclasses.replace(PRESET.fast, train_steps=train_steps, batch_size=NET_BATCH)


def fit_net(task: Task, held=(), train_steps: int = NET_TRAIN_STEPS):
    """The network trained on `task`'s train split, validated (best epoch) on its val split,
    with the windows `held` (ids) and the test split left out of both."""
    from servecast.predictors.interference import evaluate as ev

    w = task.windows.filter(pl.col("split") != "test")
    w = w.with_columns(split=pl.when(pl.col("window_id").is_in(list(held)))
                       .then(pl.lit("test")).otherwise(pl.col("split")))
    t = Task(task.name, task.metrics, task.labels, w, task.target_metric)
    return ev.train_model(t, NET, net_settings(train_steps), max_steps=NET_STEPS)


def held_out_predictions(task: Task, ids: list, train_steps: int = NET_TRAIN_STEPS
                         ) -> np.ndarray:
    """Perf the network predicts for the windows `ids` (in that order) when trained
    (`fit_net`) on the task's other train + val windows."""
    p = fit_net(task, ids, train_steps)
    want = pl.DataFrame({"window_id": ids}, schema={"window_id": pl.Utf8})
    pred = p.predict(task.metrics.join(want, on="window_id", how="semi"))
    return want.join(pred, on="window_id", how="left")["perf"].to_numpy()
