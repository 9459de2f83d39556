"""Online conformal calibration of quantile predictions (tokens).

For the tail levels a (0.9, 0.99) it keeps the log-residuals r = log1p(y) - log1p(q_raw) of
the most recent `window` observed requests and shifts the raw quantile by their empirical
a-quantile: q = (1 + q_raw) * exp(delta_a) - 1 (split-conformal on a sliding window). Online
updates also adapt the level itself (adaptive conformal inference, Gibbs & Candes 2021): each
observed request moves it by `rate` x (1 - a) x (miss - (1 - a)), miss = 1 when the output
exceeded the quantile served (p90: 0.005 per request, p99: 0.0005), so coverage recovers within
a few hundred requests of an abrupt drift instead of waiting for the window to refill. The
level stays in [0.5, 1 - (1 - a) / 3] (p90 <= 0.967, p99 <= 0.997): a burst of misses cannot
push the quantile to the window's largest residual. Coverage after a drift and without one:
benchmarks/output_length_eval.py prints both (docs/results.md#output-length). The residuals
of `fit`'s calibration rows set the window without adapting. The median is left as fitted
(shifting it trades MAE for coverage; its pinball objective targets 0.5).
"""

from __future__ import annotations

from collections import deque

import numpy as np

LEVELS = (0.5, 0.9, 0.99)
CALIBRATED = (1, 2)  # indices of LEVELS that are shifted
RATE = 0.05  # adaptive-conformal step per observed request and unit tail mass 1 - a


class Calibrator:
    """Sliding-window residual quantiles at adaptive levels; `factors` multiply
    (1 + raw quantile)."""

    def __init__(self, window: int = 2000, residuals: list[list[float]] | None = None,
                 levels: list[float] | None = None, rate: float = RATE):
        self.window, self.rate = window, rate
        self.residuals = [deque(r or [], maxlen=window) for r in (residuals or [[]] * 3)]
        self.levels = list(levels or LEVELS)  # the adapted target level of each quantile
        self.factors = np.ones(3)
        self._f = [1.0, 1.0, 1.0]  # the factors as Python floats (`apply_one`)
        self._refresh()

    def update(self, y: np.ndarray, raw: np.ndarray, adapt: bool = True,
               block: int = 50) -> None:
        """Add observed outputs `y` (n,) against raw quantiles `raw` (n, 3) and refresh;
        `adapt`: first move the levels by the misses of the quantiles served (`apply`), in
        blocks of `block` requests (a large update then acts like many small ones)."""
        y = np.asarray(y, dtype=np.float64)
        raw = np.maximum(np.asarray(raw, dtype=np.float64), 0)
        step = block if adapt else max(len(y), 1)
        for s in range(0, len(y), step):
            yb, rb = y[s:s + step], raw[s:s + step]
            if adapt:
                miss = yb[:, None] > self.apply(rb)
                for j in CALIBRATED:
                    tail = 1.0 - LEVELS[j]
                    move = self.rate * tail * float(np.sum(miss[:, j] - tail))
                    self.levels[j] = min(1.0 - tail / 3, max(0.5, self.levels[j] + move))
            r = np.log1p(yb)[:, None] - np.log1p(rb)
            for j in range(3):
                self.residuals[j].extend(r[:, j].tolist())
            self._refresh()

    def _refresh(self) -> None:
        for j in CALIBRATED:
            r = self.residuals[j]
            if len(r) >= 20:
                # finite-sample conformal level ceil((n+1)a)/n
                level = min(1.0, np.ceil((len(r) + 1) * self.levels[j]) / len(r))
                self.factors[j] = float(np.exp(np.quantile(np.fromiter(r, float), level)))
        self._f = [float(f) for f in self.factors]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated quantiles (n, 3) from raw ones, non-decreasing across levels."""
        q = (1.0 + np.maximum(raw, 0)) * self.factors - 1.0
        return np.maximum.accumulate(np.maximum(q, 0), axis=1)

    def apply_one(self, p50: float, p90: float, p99: float) -> tuple[float, float, float]:
        """`apply` on one row of raw quantiles, in Python floats (the runtime's hot path)."""
        f = self._f
        q0 = max((1.0 + max(p50, 0.0)) * f[0] - 1.0, 0.0)
        q1 = max((1.0 + max(p90, 0.0)) * f[1] - 1.0, 0.0, q0)
        q2 = max((1.0 + max(p99, 0.0)) * f[2] - 1.0, 0.0, q1)
        return q0, q1, q2

    def state(self) -> dict:
        return {"window": self.window, "residuals": [list(r) for r in self.residuals],
                "levels": self.levels, "rate": self.rate}

    @classmethod
    def from_state(cls, state: dict) -> Calibrator:
        return cls(state["window"], state["residuals"], state.get("levels"),
                   state.get("rate", RATE))
