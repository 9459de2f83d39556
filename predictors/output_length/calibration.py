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

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated quantiles (n, 3) from raw ones, non-decreasing across levels."""
        q = (1.0 + np.maximum(raw, 0)) * self.factors - 1.0
        return np.maximum.accumulate(np.maximum(q, 0), axis=1)

    def state(self) -> dict:
        return {"window": self.window, "residuals": [list(r) for r in self.residuals]}

    @classmethod
    def from_state(cls, state: dict) -> Calibrator:
        return cls(state["window"], state["residuals"])
