"""Figures of the characterization results (matplotlib). Each function takes the frames
computed by the analytics modules and returns a Figure; nothing here queries data. The
backend is the caller's (inline in a notebook, Agg headless or in the dashboard)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from scipy import stats

SIZE = (7.0, 3.6)


def figure(nrows: int = 1, ncols: int = 1, **kw) -> tuple[Figure, Any]:
    """A new figure and its axes (`plt.subplots` arguments) that pyplot does not keep: a
    notebook shows the returned figure once, and nothing accumulates in a server."""
    fig, axes = plt.subplots(nrows, ncols, **kw)
    plt.close(fig)
    return fig, axes


def _fig(title: str, size=SIZE) -> tuple[Figure, plt.Axes]:
    fig, ax = figure(figsize=size, layout="constrained")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def rate_series(series: pl.DataFrame, bin_s: float) -> Figure:
    """Requests per second over time (series from arrivals.rate_series)."""
    fig, ax = _fig(f"Request rate ({_dur(bin_s)} bins)")
    scale, unit = (3600.0, "h") if series["t_s"].max() > 3 * 3600 else (60.0, "min")
    ax.plot(series["t_s"].to_numpy() / scale, series["rate_per_s"].to_numpy(), lw=0.8)
    ax.set_xlabel(f"time since trace start ({unit})")
    ax.set_ylabel("requests / s")
    return fig


def interarrival_ccdf(gaps: np.ndarray, fits: pl.DataFrame) -> Figure:
    """Empirical CCDF of positive inter-arrival gaps with the fitted families' CCDFs."""
    fig, ax = _fig("Inter-arrival time: empirical vs fitted (CCDF)")
    x = np.sort(gaps[gaps > 0])
    if x.size:
        ccdf = 1.0 - np.arange(x.size) / x.size
        step = max(1, x.size // 2000)
        ax.loglog(x[::step], ccdf[::step], "k.", ms=2, label="trace")
        grid = np.logspace(np.log10(x[0]), np.log10(x[-1]), 200)
        for row in fits.iter_rows(named=True):
            d = _frozen(row)
            best = " (best KS)" if row["best_ks"] else ""
            ax.loglog(grid, d.sf(grid), lw=1.2,
                      label=f"{row['family']} KS={row['ks']:.3f}{best}")
        ax.set_ylim(max(1.0 / x.size, 1e-6), 1.2)
        ax.legend(fontsize=7)
    ax.set_xlabel("gap (s)")
    ax.set_ylabel("P(gap > x)")
    return fig


def _frozen(row: dict):
    fam = row["family"]
    if fam == "exponential":
        return stats.expon(scale=row["scale"])
    if fam == "gamma":
        return stats.gamma(row["shape"], scale=row["scale"])
    if fam == "weibull":
        return stats.weibull_min(row["shape"], scale=row["scale"])
    return stats.lognorm(row["shape"], scale=row["scale"])


def length_histograms(prompt: pl.DataFrame, output: pl.DataFrame) -> Figure:
    """Log-binned prompt and output length histograms (frames from lengths.length_histogram)."""
    fig, ax = _fig("Prompt and output length (log bins)")
    for df, label in ((prompt, "prompt"), (output, "output")):
        lo = np.maximum(df["lo"].to_numpy(), 0.5)
        ax.step(lo, df["share"].to_numpy(), where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("share of requests")
    ax.legend(fontsize=8)
    return fig


def lengths_by_segment(prompt: pl.DataFrame, output: pl.DataFrame, top: int = 6) -> Figure:
    """Prompt and output length distributions per segment (frames from
    lengths.length_histogram with `by`), the `top` segments by requests, one panel each."""
    fig, axes = figure(1, 2, figsize=(SIZE[0] * 1.4, SIZE[1]), layout="constrained",
                       sharey=True)
    for ax, df, label in ((axes[0], prompt, "prompt"), (axes[1], output, "output")):
        sizes = df.group_by("segment").agg(pl.col("count").sum()).sort("count",
                                                                         descending=True)
        for seg in sizes["segment"].head(top).to_list():
            d = df.filter(pl.col("segment") == seg)
            ax.step(np.maximum(d["lo"].to_numpy(), 0.5), d["share"].to_numpy(), where="post",
                    label=seg)
        ax.set_xscale("log")
        ax.set_title(f"{label} tokens per segment", fontsize=10)
        ax.set_xlabel("tokens")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the segment's requests")
    axes[1].legend(fontsize=7)
    return fig


def rank_frequency(prompt: pl.DataFrame, output: pl.DataFrame,
                   exponents: tuple[float | None, float | None]) -> Figure:
    """Zipf rank-frequency of prompt and output lengths (lengths.rank_frequency) on log-log
    axes, labelled with the fitted exponents (lengths.zipf_tail)."""
    fig, ax = _fig("Rank-frequency of lengths (Zipf)")
    for df, label, s in ((prompt, "prompt", exponents[0]), (output, "output", exponents[1])):
        if df.height:
            tag = f" (s = {s:.2f})" if s is not None else ""
            ax.loglog(df["rank"].to_numpy(), df["count"].to_numpy(), ".", ms=2,
                      label=label + tag)
    ax.set_xlabel("rank of the length value")
    ax.set_ylabel("requests with that length")
    ax.legend(fontsize=8)
    return fig


def periodic_profiles(profiles: dict[str, pl.DataFrame]) -> Figure:
    """Mean rate by hour of day and by day of week (arrivals.periodic_profile), one panel
    per period present in `profiles` ("day", "week")."""
    fig, axes = figure(1, len(profiles), figsize=(SIZE[0] * 1.2, SIZE[1]),
                       layout="constrained", squeeze=False)
    for ax, (period, df) in zip(axes[0], profiles.items(), strict=True):
        ax.bar(df["slot"].to_numpy(), df["rate_per_s"].to_numpy())
        ax.set_title("by hour of day" if period == "day" else "by day of week", fontsize=10)
        ax.set_xlabel("hour since the start of day" if period == "day"
                      else "day since the trace start (mod 7)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean requests / s")
    return fig


def latency_series(windows: pl.DataFrame) -> Figure:
    """p50 / p90 / p99 of each latency metric per window (latency.latency_percentiles with
    bin_s), one panel per metric, log y."""
    metrics = windows["metric"].unique(maintain_order=True).to_list()
    fig, axes = figure(1, len(metrics), figsize=(SIZE[0] * 1.4, SIZE[1]),
                       layout="constrained", squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        d = windows.filter(pl.col("metric") == m)
        for q in ("p50", "p90", "p99"):
            ax.plot(d["t_s"].to_numpy() / 60, d[q].to_numpy(), lw=0.9, label=q)
        ax.set_yscale("log")
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("time since trace start (min)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("seconds")
    axes[0][-1].legend(fontsize=7)
    return fig


def latency_vs_load(groups: pl.DataFrame, xlabel: str) -> Figure:
    """p50 / p90 / p99 of each latency metric per load bin (latency.latency_vs_load)."""
    fig, ax = _fig("Latency against load (p50 solid, p99 dashed)")
    for m in groups["metric"].unique(maintain_order=True).to_list():
        d = groups.filter(pl.col("metric") == m)
        line, = ax.plot(d["load_mean"].to_numpy(), d["p50"].to_numpy(), "o-", ms=3, label=m)
        ax.plot(d["load_mean"].to_numpy(), d["p99"].to_numpy(), "--", color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    return fig


def slo_series(windows: pl.DataFrame, limits: str) -> Figure:
    """SLO attainment and goodput per window (latency.slo_attainment with bin_s)."""
    fig, ax = _fig(f"SLO attainment ({limits})")
    t = windows["t_s"].to_numpy() / 60
    ax.plot(t, windows["attainment"].to_numpy(), lw=1.0, label="attainment")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time since trace start (min)")
    ax.set_ylabel("share of requests meeting the SLO")
    ax2 = ax.twinx()
    ax2.plot(t, windows["goodput_rps"].to_numpy(), lw=0.8, color="tab:orange",
             label="goodput")
    ax2.set_ylabel("goodput (req/s)")
    return fig


def conditional_output(cond: pl.DataFrame) -> Figure:
    """Output p10/p50/p90 per prompt-length bin (lengths.conditional_output)."""
    fig, ax = _fig("Output length given prompt length (p10 / p50 / p90)")
    mid = np.sqrt(cond["prompt_lo"].to_numpy() * cond["prompt_hi"].to_numpy())
    ax.fill_between(mid, cond["out_p10"].to_numpy(), cond["out_p90"].to_numpy(), alpha=0.25,
                    label="p10-p90")
    ax.plot(mid, cond["out_p50"].to_numpy(), "o-", ms=3, label="median")
    ax.set_xscale("log")
    ax.set_xlabel("prompt tokens (bin centre)")
    ax.set_ylabel("output tokens")
    ax.legend(fontsize=8)
    return fig


def weekly_heatmap(profile: pl.DataFrame) -> Figure:
    """Mean rate by day x hour (arrivals.weekly_profile)."""
    fig, ax = _fig("Mean request rate by day and hour (req/s)")
    grid = np.full((7, 24), np.nan)
    for d, h, r in profile.select("day", "hour", "rate_per_s").iter_rows():
        grid[d, h] = r
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xlabel("hour of day")
    ax.set_ylabel("day since start (mod 7)")
    fig.colorbar(im, ax=ax)
    return fig


def failure_series(series: pl.DataFrame, bin_s: float) -> Figure:
    """Failure rate per time bin (failures.failure_series)."""
    fig, ax = _fig(f"Failure rate over time ({_dur(bin_s)} bins)")
    scale = 3600.0 if series["t_s"].max() > 3 * 3600 else 60.0
    ax.plot(series["t_s"].to_numpy() / scale, series["failure_rate"].to_numpy(), lw=0.8)
    ax.set_xlabel("time since trace start (" + ("h" if scale == 3600 else "min") + ")")
    ax.set_ylabel("failed share")
    return fig


def failure_vs_load(groups: pl.DataFrame) -> Figure:
    """Failure rate per load decile (failures.failure_vs_load)."""
    fig, ax = _fig("Failure rate against load (requests per minute)")
    ax.plot(groups["load_mean"].to_numpy(), groups["failure_rate"].to_numpy(), "o-")
    ax.set_xlabel("requests per minute (decile mean)")
    ax.set_ylabel("failed share")
    return fig


def turns_and_growth(turns: pl.DataFrame, growth: pl.DataFrame) -> Figure:
    """Turns per session and context growth per turn (sessions module)."""
    fig, (a, b) = figure(1, 2, figsize=SIZE, layout="constrained")
    t = turns.filter(pl.col("turns") <= 30)
    a.bar(t["turns"].to_numpy(), t["share"].to_numpy())
    a.set_xlabel("turns per session")
    a.set_ylabel("share of sessions")
    a.set_title("Turns per session", fontsize=10)
    b.plot(growth["turn"].to_numpy(), growth["context_p50"].to_numpy(), "o-", ms=3,
           label="context (median)")
    b.plot(growth["turn"].to_numpy(), growth["prompt_p50"].to_numpy(), "s-", ms=3,
           label="new prompt (median)")
    b.set_xlabel("turn")
    b.set_ylabel("tokens")
    b.set_title("Prompt growth across turns", fontsize=10)
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return fig


def lru_hit_ratio(lru: pl.DataFrame, reuse_share: float | None) -> Figure:
    """Prefix-cache hit ratio against LRU capacity (prefix_cache.lru_hit_ratios)."""
    fig, ax = _fig("KV prefix cache: LRU hit ratio vs capacity")
    ax.semilogx(lru["capacity_blocks"].to_numpy(), lru["hit_ratio"].to_numpy(), "o-", ms=3)
    if reuse_share is not None:
        ax.axhline(reuse_share, ls="--", c="gray", label=f"unbounded cache {reuse_share:.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("cache capacity (512-token blocks)")
    ax.set_ylabel("block hit ratio")
    return fig


def ecdf(curves: dict[str, pl.DataFrame], title: str, xlabel: str) -> Figure:
    """Empirical CDFs (frames with value, cdf) on a log x axis."""
    fig, ax = _fig(title)
    for label, df in curves.items():
        v = df["value"].to_numpy().astype(float)
        ax.step(np.maximum(v, 1e-3), df["cdf"].to_numpy(), where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("CDF")
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return fig


def bars(df: pl.DataFrame, label: str, value: str, title: str, ylabel: str,
         top: int = 15) -> Figure:
    """Horizontal bar chart of `value` by `label` (the `top` largest)."""
    fig, ax = _fig(title)
    d = df.sort(value, descending=True, nulls_last=True).head(top)
    ax.barh([str(v) for v in d[label].to_list()][::-1], d[value].fill_null(0).to_numpy()[::-1])
    ax.set_xlabel(ylabel)
    ax.tick_params(axis="y", labelsize=7)
    return fig


def series_lines(df: pl.DataFrame, title: str, ylabel: str) -> Figure:
    """One line per series over time (frame with series, ts, value)."""
    fig, ax = _fig(title)
    for (name,), sub in df.group_by("series", maintain_order=True):
        ax.plot(sub["ts"].to_numpy(), sub["value"].to_numpy(), lw=0.8, label=str(name))
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return fig


def vm_variability(var: pl.DataFrame) -> Figure:
    """p1 and p99 relative to the median per benchmark group, by SKU x lifespan."""
    fig, ax = _fig("Run-to-run variability per benchmark (p1 / p99 relative to median)")
    for (sku, life), sub in var.group_by("vm_sku", "vm_lifespan", maintain_order=True):
        ax.scatter(sub["p1_rel"].to_numpy(), sub["p99_rel"].to_numpy(), s=8,
                   label=f"{sku} / {life}")
    ax.set_xlabel("p1 / median")
    ax.set_ylabel("p99 / median")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return fig


def histogram(values: np.ndarray, title: str, xlabel: str, bins: int = 40) -> Figure:
    """Plain histogram of finite `values`."""
    fig, ax = _fig(title)
    v = values[np.isfinite(values)]
    ax.hist(v, bins=bins)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return fig


def _dur(s: float) -> str:
    return f"{s / 3600:g} h" if s >= 3600 else f"{s / 60:g} min" if s >= 60 else f"{s:g} s"
