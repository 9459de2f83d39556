"""Shared machinery of every output-length model: input checks, calibration, evaluation.

Subclasses implement `_fit(train)` and `_raw(frame) -> (n, 4)` raw (p50, p90, p99, mean)
tokens; `fit` holds back the most recent rows to calibrate the tail quantiles (calibration.py),
then (models with `refit`, up to 200k rows) refits on all rows.
Failed requests (`failed` true: 0 output tokens by convention) are left out of fit/evaluate.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.base import Predictor
from servecast.predictors.output_length.calibration import Calibrator
from servecast.predictors.output_length.features import Encoder, check_requests, visibility
from servecast.predictors.output_length.history import LengthHistory
from servecast.predictors.output_length.metrics import scores, segment_scores
from servecast.predictors.output_length.runtime import STATE_FORMAT, read_state

OUTPUTS = ["p50", "p90", "p99", "mean"]


def completed(df: pl.DataFrame) -> pl.DataFrame:
    """Rows with a usable target: not failed."""
    return df.filter(~pl.col("failed")) if "failed" in df.columns else df


def time_ordered(df: pl.DataFrame) -> pl.DataFrame:
    """Rows in arrival order (stable) where arrivals exist."""
    if "arrival_s" in df.columns and df["arrival_s"].null_count() < df.height:
        return df.with_row_index("_o").sort(["arrival_s", "_o"], nulls_last=True).drop("_o")
    return df


class OutputLengthModel(Predictor):
    """Base of all output-length models (kind `output_length`)."""

    kind = "output_length"
    name: ClassVar[str]  # registry name, saved in the card as `model_class`
    table_capable: ClassVar[bool] = True  # the runtime serves it from a LengthTable
    refit: ClassVar[bool] = False  # refit on all rows after calibrating on the held-back tail

    def __init__(self, calib_frac: float = 0.15, window: int = 2000):
        super().__init__()
        self.calib_frac, self.window = calib_frac, window
        self.encoder: Encoder | None = None
        self.calibrator = Calibrator(window)

    # -- subclass hooks --------------------------------------------------------------------
    def _fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> None:
        """Fit on `train`; `valid` (later-in-time rows, or None) is for model selection."""
        raise NotImplementedError

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def table(self):
        """The LengthTable the runtime serves (table-capable models; None where the runtime
        evaluates the saved trees instead)."""
        raise NotImplementedError

    def _save_weights(self, path: Path) -> None:
        pass

    def _load_weights(self, path: Path, card: dict) -> None:
        pass

    @staticmethod
    def create(name: str = "metadata", **params) -> OutputLengthModel:
        """A new, unfitted output-length model of kind `name` (see output_length.MODELS)."""
        from servecast.predictors.output_length import create

        return create(name, **params)

    # -- protocol --------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.encoder is not None

    def fit(self, frame, target=None) -> OutputLengthModel:
        """Fit on request rows (needs prompt_tokens and the target column output_tokens;
        `target` must be None); returns self."""
        _no_target(target)
        df = time_ordered(completed(check_requests(frame, need_output=True)))
        if df.height < 20:
            raise InvalidInputError(f"only {df.height} completed requests; need at least 20")
        self.encoder = Encoder.fit(df)
        n_cal = int(df.height * self.calib_frac) if df.height >= 200 else 0
        fit_part, cal_part = df[: df.height - n_cal], df[df.height - n_cal:]
        self._fit(fit_part, cal_part if n_cal else None)  # later-in-time rows select models
        self.calibrator = Calibrator(self.window)
        if n_cal:
            self.calibrator.update(cal_part["output_tokens"].to_numpy(),
                                   self._raw(cal_part)[:, :3], adapt=False)
            if self.refit and df.height <= 200_000:
                self._fit(df)  # final model on all rows; residuals stay out-of-sample
            elif self.encoder.use_prefix or self.encoder.use_history:
                self.encoder.transform(cal_part, learn=True)
        self.card.update({"model_class": self.name,
                          "data": {"train_rows": df.height, "features": self.encoder.columns},
                          "split": {"calibration_rows": n_cal}})
        return self

    def predict(self, frame) -> pl.DataFrame:
        """Quantiles p50/p90/p99 (calibrated) and mean of output tokens, aligned with rows."""
        self.check_fitted()
        df = check_requests(frame)
        raw = self._raw(df)
        q = self.calibrator.apply(raw[:, :3])
        return pl.DataFrame({"p50": q[:, 0], "p90": q[:, 1], "p99": q[:, 2],
                             "mean": self.calibrator.mean(raw[:, 3])})

    def update(self, observed) -> OutputLengthModel:
        """Online calibration: add observed requests (with output_tokens) to the residual window.
        Changes the model (its calibration and history); see `online_evaluate` for a replay
        that leaves the model as it was."""
        self.check_fitted()
        df = completed(check_requests(observed, need_output=True))
        if df.height:
            self.calibrator.update(df["output_tokens"].to_numpy(), self._raw(df)[:, :3])
            if self.encoder.use_prefix or self.encoder.use_history:
                self.encoder.transform(df, learn=True)  # later requests see these outputs
        return self

    def evaluate(self, frame, target=None) -> dict:
        """Metrics on `frame` (tokens): overall and per segment. No side effects."""
        _no_target(target)
        self.check_fitted()
        df = time_ordered(completed(check_requests(frame, need_output=True)))
        return _scores(df, self.predict(df))

    # -- persistence -----------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        state = {"format": STATE_FORMAT, "encoder": self.encoder.state(),
                 "calibrator": self.calibrator.state(), "calib_frac": self.calib_frac}
        (path / "state.json").write_text(json.dumps(state))
        if self.encoder.prefix_index:
            keys = np.fromiter(self.encoder.prefix_index.keys(), np.int64)
            vals = np.fromiter(self.encoder.prefix_index.values(), np.int64)
            np.savez_compressed(path / "prefix_index.npz", keys=keys, values=vals)
        if self.encoder.use_history:
            self.encoder.history.save(path)
        self._save_weights(path)
        if self.table_capable:
            table = self.table()
            if table is not None:  # None: served by the runtime's forest (forest.py)
                table.save(path)
        self.card["model_class"] = self.name

    @classmethod
    def _load(cls, path: Path, card: dict) -> OutputLengthModel:
        from servecast.predictors.output_length import model_class

        klass = model_class(card.get("model_class", ""), path)
        if cls is not OutputLengthModel and not issubclass(klass, cls):
            raise InvalidInputError(f"{path} holds a {klass.__name__}, not a {cls.__name__}")
        model = klass.from_params(path, card.get("params", {}))
        state = read_state(path)
        model.encoder = Encoder.from_state(state["encoder"])
        model.calibrator = Calibrator.from_state(state["calibrator"])
        model.calib_frac = state["calib_frac"]
        if (path / "prefix_index.npz").is_file():
            with np.load(path / "prefix_index.npz") as z:
                model.encoder.prefix_index = dict(zip(z["keys"].tolist(), z["values"].tolist(),
                                                      strict=True))
        if model.encoder.use_history:
            model.encoder.history = LengthHistory.load(path)
        model._load_weights(path, card)
        return model


def _no_target(target) -> None:
    if target is not None:
        raise InvalidInputError("output-length models read their target from the frame's "
                                "output_tokens column; pass target=None")


def _scores(df: pl.DataFrame, pred: pl.DataFrame) -> dict:
    out = scores(df["output_tokens"].to_numpy(), pred)
    segs = segment_scores(df, pred)
    if segs:
        out["segments"] = segs
    return out


def online_evaluate(model: OutputLengthModel, frame, chunk: int = 200) -> dict:
    """Metrics of an online replay of `frame` on a copy of `model` (`model` is unchanged):
    rows are predicted in arrival-ordered chunks of `chunk` rows; before each chunk, the
    earlier rows that have finished by its first arrival (history.finish_s; without arrivals,
    every earlier row) are `update`d into the copy, in finishing order. `fed_rows` in the
    result counts the rows fed that way."""
    model.check_fitted()
    replay = copy.deepcopy(model)
    df = time_ordered(completed(check_requests(frame, need_output=True)))
    ask, known = visibility(df)
    fed = np.zeros(df.height, bool)
    parts = []
    for start in range(0, df.height, chunk):
        ready = np.flatnonzero(~fed[:start] & (known[:start] < ask[start]))
        if len(ready):
            replay.update(df[ready[np.argsort(known[ready], kind="stable")]])
            fed[ready] = True
        parts.append(replay.predict(df[start:start + chunk]))
    return _scores(df, pl.concat(parts)) | {"fed_rows": int(fed.sum())}
