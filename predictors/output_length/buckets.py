"""Bucket codes of session context (scalar and vector forms; numpy only, hot-path safe)."""

from __future__ import annotations

import math

import numpy as np

MAX_LOG_BUCKET = 14  # 2**14 = 16k tokens and above share the top bucket


def log_bucket(x: float | None) -> int:
    """1 + floor(log2(1 + x)) clipped to 1..15; 0 for None (the scalar twin of `log_buckets`)."""
    if x is None or x != x:
        return 0
    return 1 + min(MAX_LOG_BUCKET, int(math.log2(1.0 + max(float(x), 0.0))))


def log_buckets(x: np.ndarray) -> np.ndarray:
    """Vector form of `log_bucket` (NaN -> 0)."""
    x = np.asarray(x, dtype=np.float64)
    out = 1 + np.minimum(MAX_LOG_BUCKET, np.floor(np.log2(1.0 + np.maximum(np.nan_to_num(x), 0))))
    return np.where(np.isnan(x), 0, out).astype(np.int16)


def turn_bucket(turn: int | None) -> int:
    """1..8 for a known turn (1-based), 0 when unknown."""
    return 0 if turn is None else int(min(max(turn, 1), 8))


def growth_bucket(growth: float | None) -> int:
    """0 unknown, 1 the prompt shrank, else 2 + log2 bucket of the growth (tokens)."""
    if growth is None or growth != growth:
        return 0
    return 1 if growth < 0 else 1 + log_bucket(growth)


def context_codes(turn: int | None, prev_out: float | None, growth: float | None) -> tuple:
    """(turn_b, prev_out_b, growth_b) of one request, as the runtime computes them."""
    return (turn_bucket(turn), log_bucket(prev_out), growth_bucket(growth))
