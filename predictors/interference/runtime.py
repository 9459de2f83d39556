"""Estimator runtime of the interference predictor (no DuckDB, no Lightning import).

    rt = Runtime.load("models/interference")
    rt.interference({"cpu_util": [0.4, 0.9, 0.95], "ctx_switches": [1e4, 3e4, 5e4]})  # -> perf
    rt.interference_batch(long_frame)  # [window_id, t, metric, value] -> [window_id, perf]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.interference.predictor import InterferencePredictor


def window_frame(window) -> pl.DataFrame:
    """One window as a long frame [window_id=0, t, metric, value].

    Accepts a long frame (`t, metric, value`; a `window_id` column, if any, must hold one
    id), a mapping metric -> sequence of values (equally spaced steps, aligned at the end),
    or a mapping metric -> number (a single step).
    """
    if isinstance(window, Mapping):
        if not window:
            raise InvalidInputError("metrics window: no metrics; give at least one")
        rows: dict[str, list] = {"t": [], "metric": [], "value": []}
        for name, vals in window.items():
            seq = np.atleast_1d(np.asarray(vals, dtype=np.float64))
            n = len(seq)
            rows["t"] += list(range(-n + 1, 1))
            rows["metric"] += [str(name)] * n
            rows["value"] += seq.tolist()
        df = pl.DataFrame(rows)
    else:
        df = window if isinstance(window, pl.DataFrame) else pl.from_pandas(window)
        if "window_id" in df.columns:
            if df["window_id"].n_unique() > 1:
                raise InvalidInputError("metrics window: several window_ids; use "
                                        "interference_batch for many windows")
            df = df.drop("window_id")
    return df.with_columns(pl.lit(0, dtype=pl.Int64).alias("window_id"))


class Runtime:
    """Loaded interference model; perf in (0, 1], 1 = no degradation."""

    def __init__(self, model: InterferencePredictor):
        self.model = model

    @classmethod
    def load(cls, path: str | Path) -> Runtime:
        return cls(InterferencePredictor.load(path))

    def interference(self, metrics_window) -> float:
        """Predicted perf of one metrics window (see `window_frame` for accepted forms)."""
        return float(self.model.predict(window_frame(metrics_window))["perf"][0])

    def interference_batch(self, metrics) -> pl.DataFrame:
        """Long frame [window_id, t, metric, value] -> frame [window_id, perf]."""
        return self.model.predict(metrics)
