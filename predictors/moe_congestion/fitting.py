"""Numerical fit of (beta, gamma) for one layer: grid search then Nelder-Mead on mean L1.

Shared by the `CongestionGame` estimator and the light `Runtime` (numpy + scipy only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from servecast.predictors.moe_congestion.equilibrium import as_batches, equilibrium

GAMMA_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


def l1(pred: np.ndarray, loads: np.ndarray) -> np.ndarray:
    """L1 distance per batch between load-share vectors (B, E) -> (B,), in [0, 2]."""
    return np.abs(pred - loads).sum(axis=-1)


def normalize_loads(loads: np.ndarray) -> np.ndarray:
    """Token counts or shares (B, E) -> shares (rows sum to 1)."""
    x = np.asarray(loads, dtype=float)
    x = x[None] if x.ndim == 1 else x
    return x / np.clip(x.sum(axis=-1, keepdims=True), 1e-300, None)


def quality_scale(quality: np.ndarray) -> float:
    """Typical spread of quality across experts (std over e, averaged); 1 if degenerate."""
    s = float(np.nanmean(np.std(quality, axis=-1)))
    return s if np.isfinite(s) and s > 1e-12 else 1.0


@dataclass
class Fit:
    """Fitted parameters of one layer: inverse temperature beta (1/quality unit), congestion
    gamma (1/load share), and the mean training L1."""

    beta: float
    gamma: float
    l1: float


def fit_layer(
    loads: np.ndarray,
    quality: np.ndarray,
    weights: np.ndarray,
    fix_gamma: float | None = None,
    start: Fit | None = None,
    gamma_max: float = 1000.0,
) -> Fit:
    """Minimize mean L1 between equilibrium and observed loads over (beta, gamma >= 0).

    Arrays already shaped: loads (B, E) shares, quality (B, K, E), weights (B, K). With
    `fix_gamma` only beta is fitted (gamma = 0: the temperature-softmax baseline).
    `start` skips the grid search (used by the bootstrap).
    """
    scale = quality_scale(quality)

    def loss(log_beta: float, gamma: float) -> float:
        pred = equilibrium(quality, weights, float(np.exp(log_beta)), gamma)
        return float(l1(pred, loads).mean())

    if fix_gamma is not None:
        if start is None:
            grid = np.log(np.logspace(-2, 2.5, 19) / scale)
            lb0 = grid[int(np.argmin([loss(b, fix_gamma) for b in grid]))]
        else:
            lb0 = np.log(start.beta)
        res = minimize_scalar(lambda b: loss(b, fix_gamma), bracket=(lb0 - 0.3, lb0 + 0.3),
                              tol=1e-4)
        return Fit(float(np.exp(res.x)), float(fix_gamma), float(res.fun))

    def obj(x):
        return loss(x[0], float(np.expm1(np.clip(x[1], 0.0, np.log1p(gamma_max)))))

    if start is None:
        grid_b = np.log(np.logspace(-2, 2.5, 10) / scale)
        cands = [(loss(b, g), b, g) for b in grid_b for g in GAMMA_GRID]
        cands.sort()
        starts = [np.array([b, np.log1p(g)]) for _, b, g in cands[:2]]
    else:
        starts = [np.array([np.log(start.beta), np.log1p(start.gamma)])]
    def nelder_mead(x0, step):
        return minimize(obj, x0, method="Nelder-Mead",
                        bounds=[(None, None), (0.0, np.log1p(gamma_max))],
                        options={"xatol": 1e-3, "fatol": 1e-7, "maxiter": 300,
                                 "initial_simplex": [x0, x0 + [step, 0], x0 + [0, step]]})

    best = min((nelder_mead(x0, 0.25) for x0 in starts), key=lambda r: r.fun)
    polished = nelder_mead(best.x, 0.05)  # restart: L1 is flat along the beta-gamma ridge
    best = polished if polished.fun <= best.fun else best
    return Fit(float(np.exp(best.x[0])), float(np.expm1(max(best.x[1], 0.0))), float(best.fun))


def fit_gamma_given_beta(
    loads: np.ndarray, quality: np.ndarray, weights: np.ndarray | None, beta: float,
    gamma_max: float = 1000.0,
) -> Fit:
    """1-D fit of gamma with beta fixed (what the Runtime does for a single snapshot)."""
    q, w = as_batches(quality, weights)
    shares = normalize_loads(loads)

    def obj(g):
        return float(l1(equilibrium(q, w, beta, float(np.expm1(g))), shares).mean())

    grid = np.log1p(np.array(GAMMA_GRID + (256.0, 512.0)))
    vals = [obj(g) for g in grid]
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(obj, bounds=(lo, min(hi, np.log1p(gamma_max))), method="bounded",
                          options={"xatol": 1e-4})
    g, val = (res.x, res.fun) if res.fun <= vals[i] else (grid[i], vals[i])
    return Fit(beta, float(np.expm1(g)), float(val))
