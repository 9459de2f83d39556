"""Latency-vs-load curves and their knee, and the capacity report: a self-contained HTML
file (figure embedded as a base64 PNG, no scripts) in the style of the trace report.

A curve is a frame (or list of dicts) with one row per offered rate: `rate` (req/s) and
latency columns in ms (`p99_ttft_ms`, `p99_tpot_ms`, `mean_ttft_ms`, ...), as
`servecast.simulator.search.load_curve` returns them.
"""

from __future__ import annotations

from datetime import datetime
from importlib import metadata
from pathlib import Path

import jinja2
import polars as pl

from servecast.errors import InvalidInputError
from servecast.frames import to_polars
from servecast.numbers import fmt

TEMPLATE = "capacity.html.j2"
CURVE_COLUMNS = ["rate", "p99_ttft_ms", "p99_tpot_ms"]


def curve_frame(curve) -> pl.DataFrame:
    """The curve as a frame sorted by rate; InvalidInputError naming missing columns."""
    df = to_polars(curve, "load curve")
    missing = [c for c in CURVE_COLUMNS if c not in df.columns]
    if missing or df.height == 0:
        raise InvalidInputError(f"a load curve needs rows with columns {', '.join(CURVE_COLUMNS)}"
                                f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}")
    return df.sort("rate")


def knee(curve, metric: str = "p99_ttft_ms", factor: float = 2.0) -> dict | None:
    """The knee of a latency-vs-load curve: the lowest-rate point whose `metric` exceeds
    `factor` x its value at the lowest rate (None when the curve never bends that far)."""
    df = curve_frame(curve)
    if metric not in df.columns:
        raise InvalidInputError(f"unknown curve metric {metric!r}; have {', '.join(df.columns)}")
    if not factor > 1:
        raise InvalidInputError(f"knee factor {factor!r} must be > 1")
    base = df[metric][0]
    hit = df.filter(pl.col(metric) > factor * base)
    return hit.row(0, named=True) if hit.height else None


def curve_figure(curve, ttft_ms: float | None = None, tpot_ms: float | None = None,
                 capacity_rps: float | None = None):
    """Matplotlib figure: p99 TTFT and p99 TPOT (ms, log) vs offered rate, the SLO limits
    dashed, the knee of each marked, the capacity found as a vertical line."""
    import matplotlib.pyplot as plt

    df = curve_frame(curve)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, limit, label in ((axes[0], "p99_ttft_ms", ttft_ms, "p99 TTFT (ms)"),
                                     (axes[1], "p99_tpot_ms", tpot_ms, "p99 TPOT (ms)")):
        ax.plot(df["rate"], df[metric], "o-", color="#1f77b4")
        k = knee(df, metric)
        if k:
            ax.plot([k["rate"]], [k[metric]], "s", color="#d62728", ms=9, label="knee")
        if limit:
            ax.axhline(limit, ls="--", color="#555", label="SLO limit")
        if capacity_rps:
            ax.axvline(capacity_rps, ls=":", color="#2ca02c", label="capacity")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (req/s)")
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_capacity_report(curve, setup: dict, capacity: dict, out: str | Path) -> Path:
    """Write the HTML knee report to `out`: `setup` (deployment and workload, shown as key
    numbers), `capacity` (rate, low, high, per_seed, ttft_ms, tpot_ms, saturation_rps) and
    the curve (table + figure). Returns the path."""
    import matplotlib.pyplot as plt

    from servecast.analytics.report import _png

    df = curve_frame(curve)
    fig = curve_figure(df, capacity.get("ttft_ms"), capacity.get("tpot_ms"),
                       capacity.get("rate"))
    png = _png(fig)
    plt.close(fig)
    knees = {m: knee(df, m) for m in ("p99_ttft_ms", "p99_tpot_ms")}
    keys = [*setup.items(),
            ("SLO", " and ".join(f"p99 {m} <= {fmt(capacity[k])} ms"
                                 for m, k in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"))
                                 if capacity.get(k))),
            ("capacity (req/s, median over seeds)", capacity["rate"]),
            ("capacity min / max over seeds", [capacity["low"], capacity["high"]]),
            ("Offline throughput (req/s)", capacity.get("saturation_rps")),
            *((f"knee of {m} (req/s)", k["rate"] if k else "none") for m, k in knees.items())]
    cols = [c for c in ["rate", "load", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
                        "p99_tpot_ms", "output_tokens_per_s"] if c in df.columns]
    try:
        version = metadata.version("servecast")
    except metadata.PackageNotFoundError:
        version = "dev"
    env = jinja2.Environment(loader=jinja2.PackageLoader("servecast.analytics", "templates"),
                             autoescape=True)
    html = env.get_template(TEMPLATE).render(
        title=str(setup.get("model", "capacity")), version=version,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
        key_numbers=[(k, fmt(v)) for k, v in keys], columns=cols,
        rows=[[fmt(v) for v in r] for r in df.select(cols).iter_rows()], png=png)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
