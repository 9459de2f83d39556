"""`StepTimeModel`: the time of one engine iteration (a batch of prefill chunks and decode
sequences) of a model on a GPU at a tensor parallelism and dtype, composed from operator
latencies (`operator_latency`: physics x a residual learned across GPUs).

fit(frame) fits the operator residuals on an operator frame (`operator_latency.data`);
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
from servecast.predictors.operator_latency.predictor import VIEWS, OperatorLatencyModel, scores


class StepTimeModel(Predictor):
    kind = "step_time"

    def __init__(self, ops: OperatorLatencyModel | None = None, **op_params):
        super().__init__()
        self.ops = ops or OperatorLatencyModel(**op_params)
        self._runtime = None

    def fit(self, frame: pl.DataFrame) -> StepTimeModel:
        self.ops.fit(frame)
        self._runtime = None
        self.card = {"operators": self.ops.card}
        return self

    def runtime(self):
        """The numpy runtime of the fitted operator residuals."""
        from servecast.predictors.step_time.runtime import Runtime

        if not self.ops.forests:
            raise InvalidInputError("the step-time model is not fitted; call fit() or load a "
                                    "saved one (`servecast train step-time`)")
        if self._runtime is None:
            self._runtime = Runtime(self.ops.forests, VIEWS[self.ops.view], self.ops.specs)
        return self._runtime

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        rt = self.runtime()
        need = ["model", "gpu", "prefill", "decode"]
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise InvalidInputError(f"step-time frame lacks column(s) {', '.join(missing)}")
        out = np.empty(frame.height)
        for i, row in enumerate(frame.iter_rows(named=True)):
            out[i] = rt.step_time(row["model"], row["gpu"], row["prefill"] or (),
                                  row.get("prefill_offsets"), row["decode"] or (),
                                  tp=int(row.get("tp") or 1), dtype=row.get("dtype") or "bf16",
                                  overhead_ms=float(row.get("overhead_ms") or 0.0))
        return frame.with_columns(step_ms=out)

    def evaluate(self, frame: pl.DataFrame) -> dict:
        """MdAPE / p90 APE (%) of step_ms against `measured_ms`."""
        if "measured_ms" not in frame.columns:
            raise InvalidInputError("evaluate needs a measured_ms column")
        out = self.predict(frame)
        return scores(out["step_ms"], out["measured_ms"])

    def _save(self, path: Path) -> None:
        self.ops._save(path)

    @classmethod
    def _load(cls, path: Path, card: dict) -> StepTimeModel:
        return cls(OperatorLatencyModel._load(path, card))
