"""Figures of predictor results (matplotlib): output-length calibration and errors,
what-if policy comparison, predicted vs measured kernel latency, per-device estimates.
Each function takes arrays/frames already computed and returns a Figure; nothing here
queries data or fits models."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from servecast.analytics.plots import _fig, figure

#: quantile levels of the output-length models, as in their metrics' coverage_* keys
LEVELS = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def calibration(metrics: Mapping[str, Mapping[str, float]]) -> Figure:
    """Empirical vs nominal coverage of p50/p90/p99, one line per model (metrics dicts with
    coverage_p50/p90/p99 as returned by `evaluate`); the diagonal is perfect calibration."""
    fig, ax = _fig("Calibration: share of requests at or below each predicted quantile",
                   size=(6.0, 3.8))
    nominal = np.array(list(LEVELS.values()))
    ax.plot([0.45, 1.0], [0.45, 1.0], ls="--", c="gray", lw=0.8, label="ideal")
    for name, m in metrics.items():
        ax.plot(nominal, [m[f"coverage_{k}"] for k in LEVELS], "o-", ms=4, label=name)
    ax.set_xlabel("nominal quantile level")
    ax.set_ylabel("empirical coverage")
    ax.legend(fontsize=7)
    return fig


def prediction_errors(actual: np.ndarray, p50: np.ndarray, p90: np.ndarray,
                      max_points: int = 4000, seed: int = 0) -> Figure:
    """Left: predicted p50 vs actual output tokens (log-log, p90 as a faint marker);
    right: histogram of log2(p50 / actual), i.e. by how many doublings the median misses."""
    y, q50, q90 = (np.maximum(np.asarray(v, float), 1.0) for v in (actual, p50, p90))
    if len(y) > max_points:
        keep = np.random.default_rng(seed).choice(len(y), max_points, replace=False)
        y, q50, q90 = y[keep], q50[keep], q90[keep]
    fig, (ax, hx) = figure(1, 2, figsize=(9.0, 3.6), layout="constrained")
    lim = [1.0, float(max(y.max(), q90.max())) * 1.2]
    ax.scatter(y, q90, s=3, alpha=0.15, label="p90", c="C1")
    ax.scatter(y, q50, s=3, alpha=0.3, label="p50", c="C0")
    ax.plot(lim, lim, ls="--", c="gray", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="actual output tokens",
           ylabel="predicted tokens", title="Predicted vs actual")
    ax.legend(fontsize=7, markerscale=3)
    err = np.log2(q50 / y)
    hx.hist(np.clip(err, -8, 8), bins=48)
    hx.axvline(0, ls="--", c="gray", lw=0.8)
    hx.set(xlabel="log2(predicted p50 / actual)", ylabel="requests",
           title=f"Median error: {np.median(np.abs(err)):.2f} doublings")
    for a in (ax, hx):
        a.title.set_fontsize(10)
        a.grid(alpha=0.3)
    return fig


def whatif_policies(result: pl.DataFrame) -> Figure:
    """Mean and p99 job completion time (s) per scheduling policy (a `whatif` frame)."""
    fig, ax = _fig(f"What-if at load {result['load'][0]:.2f} "
                   f"({result['arrival_rps'][0]:.2f} req/s)")
    x = np.arange(result.height)
    ax.bar(x - 0.2, result["mean_jct_s"].to_numpy(), 0.4, label="mean JCT")
    ax.bar(x + 0.2, result["p99_jct_s"].to_numpy(), 0.4, label="p99 JCT")
    ax.set_xticks(x, result["policy"].to_list(), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("job completion time (s)")
    ax.legend(fontsize=8)
    return fig


def predicted_vs_measured(measured: np.ndarray, predicted: Mapping[str, np.ndarray],
                          title: str, unit: str = "ms", log: bool = True) -> Figure:
    """Scatter of each predictor's value against the measured one (in `unit`; log-log axes
    with `log`, as for latencies)."""
    fig, ax = _fig(title, size=(6.0, 4.2))
    y = np.asarray(measured, float)
    lo, hi = float(y.min()), float(y.max())
    for name, p in predicted.items():
        p = np.asarray(p, float)
        ax.scatter(y, p, s=4, alpha=0.35, label=name)
        lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
    ax.plot([lo, hi], [lo, hi], ls="--", c="gray", lw=0.8, label="exact")
    ax.set(xlabel=f"measured ({unit})", ylabel=f"predicted ({unit})")
    if log:
        ax.set(xscale="log", yscale="log")
    ax.legend(fontsize=7, markerscale=3)
    return fig


def device_estimates(est: pl.DataFrame, title: str) -> Figure:
    """Horizontal bars of estimated latency (ms) per device, one bar group per method
    (frame [device, method, ms])."""
    devices = est["device"].unique(maintain_order=True).to_list()
    methods = est["method"].unique(maintain_order=True).to_list()
    fig, ax = _fig(title, size=(7.0, 0.35 * len(devices) + 1.4))
    h = 0.8 / len(methods)
    for j, m in enumerate(methods):
        part = dict(est.filter(pl.col("method") == m).select("device", "ms").iter_rows())
        ax.barh([i + j * h for i in range(len(devices))],
                [part.get(d, 0.0) for d in devices], h, label=m)
    ax.set_yticks([i + h * (len(methods) - 1) / 2 for i in range(len(devices))], devices)
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()  # first device on top
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.legend(fontsize=7)
    return fig
