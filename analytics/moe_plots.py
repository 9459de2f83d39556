"""Figures for MoE routing (matplotlib): imbalance per layer/domain, expert-load
heatmaps, gamma_eff trajectories with CI bands and phase shading. `*_figure` functions return
the Figure; `*_plot` functions write it as one PNG and return the path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from servecast.analytics.plots import figure

PHASE_COLORS = {"surge": "#fdd49e", "stabilization": "#d9f0d3", "relaxation": "#c6dbef"}


def imbalance_plot(imb: pl.DataFrame, path: str | Path, metric: str = "maxvio") -> Path:
    """`imbalance_figure` written to `path`."""
    return _save(imbalance_figure(imb, metric), path)


def imbalance_figure(imb: pl.DataFrame, metric: str = "maxvio") -> Figure:
    """Bar chart of `metric` per domain, one panel per (model, assignment), bars per layer."""
    groups = imb.select("model", "assignment").unique().sort(["model", "assignment"]).rows()
    fig, axes = figure(1, len(groups), figsize=(max(4.5 * len(groups), 8.0), 3.6),
                       squeeze=False)
    for ax, (model, assign) in zip(axes[0], groups, strict=True):
        part = imb.filter((pl.col("model") == model) & (pl.col("assignment") == assign))
        domains = sorted(part["domain"].drop_nulls().unique().to_list()) or [None]
        layers = sorted(part["layer"].unique().to_list())
        width = 0.8 / len(layers)
        for j, layer in enumerate(layers):
            vals = [part.filter((pl.col("layer") == layer) & (pl.col("domain") == d))[metric]
                    .mean() if d is not None else part.filter(pl.col("layer") == layer)[metric]
                    .mean() for d in domains]
            ax.bar([i + j * width for i in range(len(domains))], vals, width,
                   label=f"layer {layer}")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(domains))])
        ax.set_xticklabels([str(d) for d in domains], rotation=30)
        ax.set_title(f"{model} ({assign})")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def trajectory_plot(traj: pl.DataFrame, phases: pl.DataFrame | None, path: str | Path) -> Path:
    """`trajectory_figure` written to `path`."""
    return _save(trajectory_figure(traj, phases), path)


def trajectory_figure(traj: pl.DataFrame, phases: pl.DataFrame | None) -> Figure:
    """gamma_eff vs step per layer with bootstrap CI band; phase segments shaded."""
    layers = sorted(traj["layer"].unique().to_list())
    fig, axes = figure(1, len(layers), figsize=(4.5 * len(layers), 3.4), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        part = traj.filter(pl.col("layer") == layer).sort("step")
        x = part["step"].to_numpy()
        ax.plot(x, part["gamma"].to_numpy(), "o-", label="gamma_eff (multi-type)")
        if part["gamma_lo"].null_count() == 0:
            ax.fill_between(x, part["gamma_lo"].to_numpy(), part["gamma_hi"].to_numpy(),
                            alpha=0.25)
        ax.plot(x, part["gamma_single"].to_numpy(), "s--", alpha=0.7, label="single-type")
        if phases is not None and not phases.is_empty():
            for seg in phases.filter(pl.col("layer") == layer).iter_rows(named=True):
                ax.axvspan(seg["start"], seg["end"], color=PHASE_COLORS[seg["phase"]], alpha=0.5,
                           zorder=0)
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("training step")
        ax.set_ylabel("gamma_eff")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def share_heatmap(shares: pl.DataFrame, title: str) -> Figure:
    """Expert-load shares as a heatmap: one row per (domain, layer), one column per expert
    (a `moe.shares` frame of one model and assignment); color = share x experts (1 = even)."""
    part = shares.sort(["domain", "layer", "expert"])
    wide = part.pivot(on="expert", index=["domain", "layer"], values="share").sort(
        ["domain", "layer"])
    labels = [f"{d} / L{layer}" for d, layer in wide.select("domain", "layer").iter_rows()]
    mat = np.nan_to_num(wide.drop("domain", "layer").to_numpy().astype(float))
    rel = mat * mat.shape[1]
    fig, ax = figure(figsize=(8.0, 0.22 * len(labels) + 1.4), layout="constrained")
    im = ax.imshow(rel, aspect="auto", cmap="magma", interpolation="nearest",
                   vmin=0, vmax=max(2.0, float(np.quantile(rel, 0.99))))
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("expert")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="load / even share")
    return fig


def alpha_plot(final: pl.DataFrame, path: str | Path) -> Path:
    """Final gamma_eff (with CI) against the auxiliary-loss coefficient alpha, per layer."""
    fig, ax = figure(figsize=(5, 3.4))
    for (layer,), part in final.sort("alpha").group_by("layer", maintain_order=True):
        a = [max(v, 1e-4) for v in part["alpha"].to_list()]
        g = part["gamma"].to_numpy()
        # a percentile CI may exclude the point estimate: draw the interval part that does
        err = [np.clip(g - part["gamma_lo"].fill_null(part["gamma"]).to_numpy(), 0, None),
               np.clip(part["gamma_hi"].fill_null(part["gamma"]).to_numpy() - g, 0, None)]
        ax.errorbar(a, g, yerr=err, marker="o", capsize=3, label=f"layer {layer}")
    ax.set_xscale("log")
    ax.set_xlabel("alpha (alpha = 0 drawn at 1e-4)")
    ax.set_ylabel("gamma_eff")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
