"""gamma_eff over training checkpoints, and phase segmentation of its trend.

`trajectory(run_dir)`: per checkpoint and layer, the multi-type gamma_eff with a bootstrap CI,
its explicit part (the auxiliary loss's, decomposition.py) and implicit rest, the single-type
gamma, held-out L1 of both and of the softmax baseline, and load imbalance.

`segment_phases(x, y)`: piecewise-linear fit with 1..3 segments (exhaustive breakpoints,
BIC choice); each segment is labelled by its total change relative to the series' scale:
surge (rises > `threshold`), relaxation (falls > `threshold`), stabilization otherwise.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl

from servecast.predictors.moe_congestion.analysis import (
    DEFAULT_QUALITY,
    compare,
    gamma_all_batches,
    load_snapshot,
    n_layers,
)
from servecast.predictors.moe_congestion.decomposition import (
    NATS_QUALITIES,
    decompose,
    small_moe_aux_coef,
)
from servecast.predictors.moe_congestion.run import checkpoints, run_config


def trajectory(run_dir: str | Path, quality: str = DEFAULT_QUALITY, n_types: int = 8,
               n_bootstrap: int = 20, every: int = 1, log=None,
               all_batches: bool = False) -> pl.DataFrame:
    """One row per (step, layer): gamma (multi-type gamma_eff), gamma_lo/gamma_hi (bootstrap
    CI), beta, gamma_single, heldout_l1 of congestion_multi / congestion / softmax / mean_loads,
    maxvio of the snapshot's loads, alpha and mean eval loss (nats); all fitted on the training
    batches of the held-out split. With the run's alpha known and quality in nats, also
    gamma_explicit / gamma_implicit (decomposition.py). `all_batches`: also gamma_all,
    gamma_all_lo/hi, beta_all, gamma_single_all - the same games fitted on every batch of the
    checkpoint (`gamma_all_batches`, the characterization without a held-out split)."""
    alpha = run_config(run_dir).get("config", {}).get("alpha")
    rows = []
    for i, (step, path) in enumerate(checkpoints(run_dir)):
        if i % every:
            continue
        snap = load_snapshot(path)
        for layer in range(n_layers(snap)):
            cmp = compare(snap, layer, quality, n_types, n_bootstrap)
            by = {r["model"]: r for r in cmp.iter_rows(named=True)}
            cm, cs = by["congestion_multi"], by["congestion"]
            counts = np.bincount(snap[f"choices_{layer}"].ravel(),
                                 minlength=snap[f"logits_{layer}"].shape[1])
            rows.append({
                "step": step, "layer": layer, "alpha": alpha, "gamma": cm["gamma"],
                "gamma_lo": cm["gamma_lo"], "gamma_hi": cm["gamma_hi"], "beta": cm["beta"],
                "gamma_single": cs["gamma"], "l1_multi": cm["heldout_l1"],
                "l1_single": cs["heldout_l1"], "l1_softmax": by["softmax"]["heldout_l1"],
                "l1_softmax_multi": by["softmax_multi"]["heldout_l1"],
                "l1_mean_loads": by["mean_loads"]["heldout_l1"],
                "maxvio": float(counts.max() / counts.mean() - 1),
                "eval_loss": float(snap["loss"].mean())})
            if all_batches:
                ga = {r["model"]: r for r in gamma_all_batches(
                    snap, layer, quality, n_types, n_bootstrap).iter_rows(named=True)}
                rows[-1].update({
                    "gamma_all": ga["congestion_multi"]["gamma"],
                    "gamma_all_lo": ga["congestion_multi"]["gamma_lo"],
                    "gamma_all_hi": ga["congestion_multi"]["gamma_hi"],
                    "beta_all": ga["congestion_multi"]["beta"],
                    "gamma_single_all": ga["congestion"]["gamma"]})
            if log:
                log(f"step {step} layer {layer}: gamma_eff {cm['gamma']:.3g} "
                    f"[{cm['gamma_lo'] or float('nan'):.3g}, {cm['gamma_hi'] or float('nan'):.3g}]")
    traj = pl.DataFrame(rows)
    if alpha is not None and quality in NATS_QUALITIES and rows:
        traj = decompose(traj, small_moe_aux_coef(alpha, n_layers(snap)),
                         snap["logits_0"].shape[1])
    return traj


def _linfit_sse(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0, float(((y - y.mean()) ** 2).sum())
    slope, icpt = np.polyfit(x, y, 1)
    return float(slope), float(((y - (slope * x + icpt)) ** 2).sum())


def segment_phases(x, y, max_segments: int = 3, min_points: int = 2,
                   threshold: float = 0.15) -> list[dict]:
    """Segments [{start, end, slope, change, phase}] of series y(x) (x increasing).

    change = slope * (end - start) / scale with scale = max(|y|) (or 1); phase = surge if
    change > threshold, relaxation if < -threshold, else stabilization.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n == 0:
        return []
    scale = float(np.abs(y).max()) or 1.0
    best = None
    for k in range(1, max_segments + 1):
        for cuts in itertools.combinations(range(min_points, n - min_points + 1), k - 1):
            bounds = [0, *cuts, n]
            if any(b - a < min_points for a, b in itertools.pairwise(bounds)) and n >= min_points:
                continue
            sse = sum(_linfit_sse(x[a:b], y[a:b])[1] for a, b in itertools.pairwise(bounds))
            bic = n * np.log(max(sse / n, 1e-12 * scale**2)) + 3 * k * np.log(n)
            if best is None or bic < best[0]:
                best = (bic, bounds)
    segs = []
    for a, b in itertools.pairwise(best[1]):
        slope, _ = _linfit_sse(x[a:b], y[a:b])
        change = slope * (x[b - 1] - x[a]) / scale
        phase = ("surge" if change > threshold else
                 "relaxation" if change < -threshold else "stabilization")
        segs.append({"start": float(x[a]), "end": float(x[b - 1]), "slope": slope,
                     "change": float(change), "phase": phase})
    return segs


def phases(traj: pl.DataFrame, value: str = "gamma") -> pl.DataFrame:
    """Phase segments of `value` per layer of a `trajectory` frame."""
    rows = []
    for (layer,), part in traj.sort("step").group_by("layer", maintain_order=True):
        for s in segment_phases(part["step"].to_numpy(), part[value].to_numpy()):
            rows.append({"layer": layer, **s})
    return pl.DataFrame(rows)
