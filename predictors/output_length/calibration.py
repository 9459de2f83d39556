"""Online conformal calibration of quantile predictions (tokens).

For the tail levels a (0.9, 0.99) it keeps the log-residuals r = log1p(y) - log1p(q_raw) of
the most recent `window` observed requests and shifts the raw quantile by their empirical
a-quantile: q = (1 + q_raw) * exp(delta_a) - 1. Under drift the window follows the recent
residuals, which keeps coverage near a (split-conformal on a sliding window). The median is
left as fitted (shifting it trades MAE for coverage; its pinball objective targets 0.5).
"""

from __future__ import annotations

from collections import deque

import numpy as np

LEVELS = (0.5, 0.9, 0.99)
CALIBRATED = (1, 2)  # indices of LEVELS that are shifted


class Calibrator:
    """Sliding-window residual quantiles; `factors` multiply (1 + raw quantile)."""

    def __init__(self, window: int = 2000, residuals: list[list[float]] | None = None):
        self.window = window
        self.residuals = [deque(r or [], maxlen=window) for r in (residuals or [[]] * 3)]
        self.factors = np.ones(3)
        self._f = [1.0, 1.0, 1.0]  # the factors as Python floats (`apply_one`)
        self._refresh()

    def update(self, y: np.ndarray, raw: np.ndarray) -> None:
        """Add observed outputs `y` (n,) against raw quantiles `raw` (n, 3) and refresh."""
        y = np.log1p(np.asarray(y, dtype=np.float64))
        r = y[:, None] - np.log1p(np.maximum(np.asarray(raw, dtype=np.float64), 0))
        for j in range(3):
            self.residuals[j].extend(r[:, j].tolist())
        self._refresh()

    def _refresh(self) -> None:
        for j, a in enumerate(LEVELS):
            if j not in CALIBRATED:
                continue
            r = self.residuals[j]
            if len(r) >= 20:
                # finite-sample conformal level ceil((n+1)a)/n
                level = min(1.0, np.ceil((len(r) + 1) * a) / len(r))
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
        return {"window": self.window, "residuals": [list(r) for r in self.residuals]}

    @classmethod
    def from_state(cls, state: dict) -> Calibrator:
        return cls(state["window"], state["residuals"])
