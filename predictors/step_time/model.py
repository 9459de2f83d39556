"""`StepTimeModel`: the time of one engine iteration (a batch of prefill chunks and decode
sequences) of a model on a GPU at a tensor parallelism and dtype, composed from operator
latencies (`operator_latency`: physics x a residual learned across GPUs).

fit(frame, serving=rows) fits the operator residuals on an operator frame
(`operator_latency.data`), then each engine family's overhead terms on measured serving rows
(`serving.serving_frame`; development rows only; `serving.fit_overheads`), saved in the card
(`engine_overheads`, with each term set's validation MdAPE in `overhead_validation`);
predict(frame) takes one batch per row: model, gpu, tp, dtype, prefill (list of chunk
lengths), prefill_offsets (list, optional), decode (list of context lengths) -> `step_ms`.
evaluate(frame) scores `step_ms` against a measured `measured_ms` column. Served by
`runtime.Runtime` (numpy only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.base import Predictor
from servecast.predictors.metrics import ape_scores
from servecast.predictors.operator_latency.predictor import OperatorLatencyModel
from servecast.predictors.operator_latency.runtime import load_parts


class StepTimeModel(Predictor):
    """Operator residuals (`OperatorLatencyModel` of `view`, `trees`, `leaves`, `seed`,
    `specs`) composed into iterations, plus the engine overhead added to every step:
    `overhead_ms` (ms per iteration) when given, else the terms fitted for `default_engine`
    (0 when none was fitted)."""

    kind = "step_time"

    def __init__(self, specs: dict | None = None, view: str = "relative", trees: int = 150,
                 leaves: int = 15, seed: int = 0, overhead_ms: float | None = 0.0,
                 default_engine: str = "vllm"):
        super().__init__()
        if overhead_ms is not None and (not isinstance(overhead_ms, int | float)
                                        or overhead_ms < 0):
            raise InvalidInputError(f"overhead_ms={overhead_ms!r} must be a number >= 0")
        self.ops = OperatorLatencyModel(specs=specs, view=view, trees=trees, leaves=leaves,
                                        seed=seed)
        self.overhead_ms = None if overhead_ms is None else float(overhead_ms)
        self.default_engine = default_engine
        self.overheads: dict[str, float] = {}
        self._runtime = None

    @property
    def is_fitted(self) -> bool:
        return self.ops.is_fitted

    def fit(self, frame: pl.DataFrame, target=None,
            serving: pl.DataFrame | None = None) -> StepTimeModel:
        """Fit the operator residuals on an operator frame (`operator_latency.data`), then
        the engine overheads on `serving` rows (`serving.serving_frame`), if given."""
        from servecast.predictors.step_time.serving import fit_overheads

        self.ops.fit(frame)
        self.overheads, self._runtime, validation = {}, None, {}
        if serving is not None and not serving.is_empty():
            self.overheads, validation = fit_overheads(self.runtime(), serving)
            self._runtime = None
        self.card = {"operators": self.ops.card, "engine_overheads": self.overheads,
                     "overhead_validation": {
                         e: {ts: (round(v, 2) if np.isfinite(v) else None)
                             for ts, v in val.items()} for e, val in validation.items()}}
        if serving is not None:
            self.card["serving_rows"] = serving.group_by("engine").len().sort("engine").rows()
        return self

    def runtime(self):
        """The numpy runtime of the fitted operator residuals."""
        from servecast.predictors.step_time.runtime import Runtime

        self.check_fitted()
        if self._runtime is None:
            rt = self.ops.rt
            self._runtime = Runtime(rt.forests, rt.columns, rt.specs, self.overhead_ms,
                                    self.overheads, self.default_engine)
        return self._runtime

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with `step_ms` (one batch per row: model, gpu, prefill, decode; optional
        tp, dtype, prefill_offsets, overhead_ms)."""
        return frame.with_columns(**self.runtime().predict(frame))

    def evaluate(self, frame: pl.DataFrame, target=None) -> dict:
        """MdAPE / p90 APE (%) of step_ms against `measured_ms`."""
        if "measured_ms" not in frame.columns:
            raise InvalidInputError("evaluate needs a measured_ms column")
        out = self.predict(frame)
        return ape_scores(out["step_ms"], out["measured_ms"])

    def _save(self, path: Path) -> None:
        self.ops._save(path)

    @classmethod
    def _load(cls, path: Path, card: dict) -> StepTimeModel:
        model = cls.from_params(path, card.get("params", {}))
        model.ops.rt = load_parts(path)
        model.ops.card = card.get("operators", {})
        model.overheads = dict(card.get("engine_overheads") or {})
        return model
