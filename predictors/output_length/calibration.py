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

The level: online observations also learn a scale of the whole distribution. `shift` is an
exponential moving average (weight `level_rate` per request, LEVEL_RATE: ~100 requests of
memory) of the p50 log-residual, clipped to +-CLIP, minus its mean on `fit`'s calibration rows
(0 until requests are observed); every quantile and the mean are multiplied (on 1 + tokens)
by exp(shift) before the conformal factors, and residuals enter the window relative to the
shifted quantiles. An LLM that writes longer answers than the training one moves all four
outputs within a few hundred requests, and the window keeps measuring the spread. Memory is
bounded: three windows of `window` floats and a few scalars.
"""

from __future__ import annotations

from collections import deque

import numpy as np

LEVELS = (0.5, 0.9, 0.99)
CALIBRATED = (1, 2)  # indices of LEVELS that are shifted
RATE = 0.05  # adaptive-conformal step per observed request and unit tail mass 1 - a
LEVEL_RATE = 0.01  # EMA weight of one observed request in the level (shift)
CLIP = 3.0  # |log-residual| fed to the level at most (one outlier moves it <= 0.03)


class Calibrator:
    """Sliding-window residual quantiles at adaptive levels; `factors` multiply
    (1 + raw quantile)."""

    def __init__(self, window: int = 2000, residuals: list[list[float]] | None = None,
                 levels: list[float] | None = None, rate: float = RATE,
                 level_rate: float = LEVEL_RATE, ema: float = 0.0, baseline: float = 0.0,
                 observed: int = 0):
        self.window, self.rate, self.level_rate = window, rate, level_rate
        # EMA of the clipped p50 log-residual; its value on the fit's calibration rows
        self.ema, self.baseline, self.observed = ema, baseline, observed
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
        if not adapt and len(y):  # the fit's calibration rows: the level's reference
            self.baseline = self.ema = float(np.mean(np.clip(
                np.log1p(y) - np.log1p(raw[:, 0]), -CLIP, CLIP)))
        step = block if adapt else max(len(y), 1)
        for s in range(0, len(y), step):
            yb, rb = y[s:s + step], raw[s:s + step]
            if adapt:
                miss = yb[:, None] > self.apply(rb)
                for j in CALIBRATED:
                    tail = 1.0 - LEVELS[j]
                    move = self.rate * tail * float(np.sum(miss[:, j] - tail))
                    self.levels[j] = min(1.0 - tail / 3, max(0.5, self.levels[j] + move))
            r = np.log1p(yb)[:, None] - np.log1p(rb) - self.shift
            for j in range(3):
                self.residuals[j].extend(r[:, j].tolist())
            if adapt:
                self._learn_level(np.clip(r[:, 0] + self.shift, -CLIP, CLIP))
            self._refresh()

    @property
    def scale(self) -> float:
        """exp(shift): the multiplier of 1 + tokens the level applies."""
        return self._scale

    @property
    def shift(self) -> float:
        """The learned level: log of the scale applied to 1 + every output (0 = as fitted)."""
        return self.ema - self.baseline

    def _learn_level(self, r: np.ndarray) -> None:
        """Fold p50 log-residuals `r` (against the unshifted quantiles), in order, into the
        EMA."""
        a = self.level_rate
        w = a * (1.0 - a) ** np.arange(len(r) - 1, -1, -1)
        self.ema = float((1.0 - a) ** len(r) * self.ema + w @ r)
        self.observed += len(r)

    def _refresh(self) -> None:
        for j in CALIBRATED:
            r = self.residuals[j]
            if len(r) >= 20:
                # finite-sample conformal level ceil((n+1)a)/n
                level = min(1.0, np.ceil((len(r) + 1) * self.levels[j]) / len(r))
                self.factors[j] = float(np.exp(np.quantile(np.fromiter(r, float), level)))
        s = float(np.exp(self.shift))
        self._f = [float(f) * s for f in self.factors]
        self._scale = s

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated quantiles (n, 3) from raw ones, non-decreasing across levels."""
        q = (1.0 + np.maximum(raw, 0)) * self.factors * self._scale - 1.0
        return np.maximum.accumulate(np.maximum(q, 0), axis=1)

    def mean(self, raw_mean):
        """The mean (tokens; a float or an array) under the learned level."""
        return np.maximum((1.0 + np.maximum(raw_mean, 0)) * self._scale - 1.0, 0)

    def apply_one(self, p50: float, p90: float, p99: float) -> tuple[float, float, float]:
        """`apply` on one row of raw quantiles, in Python floats (the runtime's hot path)."""
        f = self._f
        q0 = max((1.0 + max(p50, 0.0)) * f[0] - 1.0, 0.0)
        q1 = max((1.0 + max(p90, 0.0)) * f[1] - 1.0, 0.0, q0)
        q2 = max((1.0 + max(p99, 0.0)) * f[2] - 1.0, 0.0, q1)
        return q0, q1, q2

    def state(self) -> dict:
        return {"window": self.window, "residuals": [list(r) for r in self.residuals],
                "levels": self.levels, "rate": self.rate, "level_rate": self.level_rate,
                "ema": self.ema, "baseline": self.baseline, "observed": self.observed}

    @classmethod
    def from_state(cls, state: dict) -> Calibrator:
        return cls(state["window"], state["residuals"], state.get("levels"),
                   state.get("rate", RATE), state.get("level_rate", LEVEL_RATE),
                   state.get("ema", 0.0), state.get("baseline", 0.0), state.get("observed", 0))


PENDING = 10_000  # estimates kept awaiting their completion (oldest dropped first)


class OnlineCalibration:
    """What a runtime keeps to learn from completions: the calibrator and the raw quantiles of
    its last PENDING single estimates, keyed by request id (else by session and prompt
    tokens), so `observe` can score the estimate that was served. `frozen`: serve as
    calibrated now, learn nothing (the estimates then equal the model's `predict`)."""

    def __init__(self, calibrator: Calibrator, frozen: bool = False):
        from collections import OrderedDict

        self.calibrator, self.frozen = calibrator, frozen
        self.pending: OrderedDict = OrderedDict()

    @staticmethod
    def key(request_id, session_id, prompt_tokens) -> tuple:
        return ("id", request_id) if request_id is not None else (
            "s", session_id, float(prompt_tokens))

    def serve(self, key: tuple, p50: float, p90: float, p99: float,
              mean: float) -> tuple[float, float, float, float]:
        """Calibrated (p50, p90, p99, mean) of one raw estimate, remembered under `key`."""
        if not self.frozen:
            self.pending[key] = (p50, p90, p99)
            self.pending.move_to_end(key)
            if len(self.pending) > PENDING:
                self.pending.popitem(last=False)
        c = self.calibrator
        return (*c.apply_one(p50, p90, p99), float(c.mean(mean)))

    def learn(self, key: tuple, output_tokens: float) -> bool:
        """Score the estimate served under `key` against the observed output (tokens) and
        update the calibrator and level; False where no such estimate is pending."""
        raw = self.pending.pop(key, None)
        if raw is None:
            return False
        self.calibrator.update(np.array([float(output_tokens)]), np.array([raw]))
        return True
