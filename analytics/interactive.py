"""Interactive figures (Vega-Lite through Altair) for the dashboard: the same inputs and the
same information as the matplotlib figures of plots.py, prediction_plots.py and moe_plots.py
(which keep drawing the static PNGs of the HTML reports). Each function takes frames/arrays
the analytics modules or predictors already computed (in DuckDB) and returns an Altair chart
whose data is that aggregated, capped frame; nothing here queries data.

Conventions: every mark has a tooltip; continuous axes zoom and pan (scroll, drag; a
double-click resets); axes that are logarithmic in the static figure stay logarithmic (values
clamped to the same floor); a chart with several series has a legend that filters (click an
entry to fade the others, shift-click for more, click elsewhere to reset)."""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import numpy as np
import polars as pl

from servecast.analytics.plots import _dur, _frozen
from servecast.analytics.prediction_plots import LEVELS

#: plot height in pixels (the width follows the page)
HEIGHT = 300
#: series that are not data (ideal diagonals, bounds): gray and dashed
REFERENCE = "#8a8a8a"


def _scale(log: bool = False, **kw) -> alt.Scale:
    return alt.Scale(type="log", **kw) if log else alt.Scale(zero=False, **kw)


def _tips(df: pl.DataFrame) -> list[alt.Tooltip]:
    """A tooltip for every scalar column of `df` (numbers to 4 significant digits)."""
    tips = []
    for name, dtype in df.schema.items():
        if dtype.is_numeric():
            tips.append(alt.Tooltip(f"{name}:Q", format=",.4~g"))
        elif dtype.is_temporal():
            tips.append(alt.Tooltip(f"{name}:T", format="%Y-%m-%d %H:%M"))
        elif dtype in (pl.String, pl.Categorical, pl.Boolean) or isinstance(dtype, pl.Enum):
            tips.append(alt.Tooltip(f"{name}:N"))
    return tips


def _legend_filter(charts: list[alt.Chart], field: str, title: str | None = None,
                   **color) -> list[alt.Chart]:
    """Color `charts` (layers on one data set) by `field` with one legend selection: clicking
    an entry fades the other series in every layer."""
    sel = alt.selection_point(fields=[field], bind="legend")
    enc = {"color": alt.Color(f"{field}:N", title=title or field, **color),
           "opacity": alt.when(sel).then(alt.value(1.0)).otherwise(alt.value(0.12))}
    return [c.encode(**enc).add_params(sel) if i == 0 else c.encode(**enc)
            for i, c in enumerate(charts)]


def _xy(x: str, y: str, x_title: str, y_title: str, x_log: bool = False, y_log: bool = False,
        x_type: str = "Q", **y_scale) -> dict:
    return {"x": alt.X(f"{x}:{x_type}", title=x_title,
                       scale=_scale(x_log) if x_type == "Q" else alt.Undefined),
            "y": alt.Y(f"{y}:Q", title=y_title, scale=_scale(y_log, **y_scale))}


def lines(df: pl.DataFrame, x: str, y: str, *, title: str, x_title: str, y_title: str,
          series: str | None = None, x_log: bool = False, y_log: bool = False,
          step: bool = False, points: bool = True, x_type: str = "Q",
          zoom: str | None = None, legend_at: str = "right") -> alt.Chart:
    """One line per `series` value (or one line) of `y` against `x`, with a small point per
    row carrying the tooltip; zoomable (`zoom`: the name of that parameter, distinct per panel
    of a concatenated chart; `legend_at`: e.g. "top-left", inside the plot, for a panel of
    one); `step`: a step curve (histograms, ECDFs)."""
    mark = alt.Chart(df, title=title, height=HEIGHT).mark_line(
        interpolate="step-after" if step else "linear",
        point=alt.OverlayMarkDef(size=12, filled=True) if points else False)
    chart = mark.encode(**_xy(x, y, x_title, y_title, x_log, y_log, x_type), tooltip=_tips(df))
    if series is not None and df[series].n_unique() > 1:
        chart = _legend_filter([chart], series, legend=alt.Legend(orient=legend_at))[0]
    return chart.interactive(name=zoom)


def _over_time(series: pl.DataFrame, bin_s: float, y: str, title: str,
               y_title: str) -> alt.Chart:
    """`y` per time bin against hours (traces over 3 h) or minutes since the trace start."""
    scale, unit = (3600.0, "h") if series["t_s"].max() > 3 * 3600 else (60.0, "min")
    df = series.with_columns((pl.col("t_s") / scale).alias(f"t_{unit}"))
    return lines(df, f"t_{unit}", y, title=title, y_title=y_title, points=False,
                 x_title=f"time since trace start ({unit})")


# -- characterization (plots.py) ------------------------------------------------------------
def rate_series(series: pl.DataFrame, bin_s: float) -> alt.Chart:
    """Requests per second over time (series from arrivals.rate_series)."""
    return _over_time(series, bin_s, "rate_per_s", f"Request rate ({_dur(bin_s)} bins)",
                      "requests / s")


def failure_series(series: pl.DataFrame, bin_s: float) -> alt.Chart:
    """Failure rate per time bin (failures.failure_series)."""
    return _over_time(series, bin_s, "failure_rate", f"Failure rate over time ({_dur(bin_s)} "
                      "bins)", "failed share")


def failure_vs_load(groups: pl.DataFrame) -> alt.Chart:
    """Failure rate per load decile (failures.failure_vs_load)."""
    return lines(groups, "load_mean", "failure_rate",
                 title="Failure rate against load (requests per minute)",
                 x_title="requests per minute (decile mean)", y_title="failed share")


def latency_series(windows: pl.DataFrame) -> alt.Chart:
    """p50 / p90 / p99 of each latency metric per window (latency.latency_percentiles with
    bin_s) against minutes since the trace start, one line per metric and percentile, log y."""
    df = windows.unpivot(["p50", "p90", "p99"], index=["t_s", "metric", "n"],
                         variable_name="q", value_name="seconds").with_columns(
        (pl.col("metric") + " " + pl.col("q")).alias("series"),
        (pl.col("t_s") / 60).alias("t_min")).filter(pl.col("seconds") > 0)
    return lines(df.drop("q"), "t_min", "seconds", title="Latency percentiles over time",
                 x_title="time since trace start (min)", y_title="seconds", series="series",
                 y_log=True, points=False)


def latency_vs_load(groups: pl.DataFrame, xlabel: str) -> alt.Chart:
    """p50 and p99 of each latency metric per load bin (latency.latency_vs_load), log y."""
    df = groups.unpivot(["p50", "p99"], index=["metric", "bin", "load_mean", "n"],
                        variable_name="q", value_name="seconds").with_columns(
        (pl.col("metric") + " " + pl.col("q")).alias("series")).filter(pl.col("seconds") > 0)
    return lines(df.drop("q"), "load_mean", "seconds", title=f"Latency against {xlabel}",
                 x_title=xlabel, y_title="seconds", series="series", y_log=True)


def slo_series(windows: pl.DataFrame, limits: str) -> alt.Chart:
    """SLO attainment per window (latency.slo_attainment with bin_s)."""
    df = windows.with_columns((pl.col("t_s") / 60).alias("t_min"))
    return lines(df, "t_min", "attainment", title=f"SLO attainment ({limits})",
                 x_title="time since trace start (min)", y_title="share meeting the SLO")


def interarrival_ccdf(gaps: np.ndarray, fits: pl.DataFrame) -> alt.Chart:
    """Empirical CCDF of positive inter-arrival gaps (points, at most ~2000) with the fitted
    families' CCDFs (lines, labelled with their KS distance), log-log."""
    x = np.sort(gaps[gaps > 0])
    parts = []
    if x.size:
        step = max(1, x.size // 2000)
        parts.append(pl.DataFrame({"curve": "trace", "gap_s": x[::step],
                                   "ccdf": (1.0 - np.arange(x.size) / x.size)[::step]}))
        grid = np.logspace(np.log10(x[0]), np.log10(x[-1]), 200)
        for row in fits.iter_rows(named=True):
            best = " (best KS)" if row["best_ks"] else ""
            parts.append(pl.DataFrame({"curve": f"{row['family']} KS={row['ks']:.3f}{best}",
                                       "gap_s": grid, "ccdf": _frozen(row).sf(grid)}))
    df = (pl.concat(parts) if parts else pl.DataFrame(
        schema={"curve": pl.String, "gap_s": pl.Float64, "ccdf": pl.Float64}))
    floor = max(1.0 / x.size, 1e-6) if x.size else 1e-6
    df = df.filter(pl.col("ccdf") >= floor)
    base = alt.Chart(df, title="Inter-arrival time: empirical vs fitted (CCDF)", height=HEIGHT)
    enc = _xy("gap_s", "ccdf", "gap (s)", "P(gap > x)", True, True, domain=[floor, 1.2])
    dots = base.mark_point(size=8, filled=True).transform_filter(alt.datum.curve == "trace")
    fitted = base.mark_line().transform_filter(alt.datum.curve != "trace")
    layers = _legend_filter([dots.encode(**enc, tooltip=_tips(df)),
                             fitted.encode(**enc, tooltip=_tips(df))], "curve")
    return alt.layer(*layers).interactive()


def length_histograms(prompt: pl.DataFrame, output: pl.DataFrame) -> alt.Chart:
    """Log-binned prompt and output length histograms (frames from lengths.length_histogram),
    as step curves on a log token axis."""
    df = pl.concat([d.with_columns(length=pl.lit(name),
                                   tokens=pl.max_horizontal(pl.col("lo"), pl.lit(0.5)))
                    for d, name in ((prompt, "prompt"), (output, "output"))], how="diagonal")
    return lines(df, "tokens", "share", title="Prompt and output length (log bins)",
                 x_title="tokens", y_title="share of requests", series="length", x_log=True,
                 step=True)


def conditional_output(cond: pl.DataFrame) -> alt.Chart:
    """Output p10-p90 band and median per prompt-length bin (lengths.conditional_output),
    against the bin's geometric centre on a log axis."""
    df = cond.with_columns(prompt_mid=(pl.col("prompt_lo") * pl.col("prompt_hi")).sqrt())
    base = alt.Chart(df, title="Output length given prompt length (p10 / p50 / p90)",
                     height=HEIGHT)
    x = alt.X("prompt_mid:Q", title="prompt tokens (bin centre)", scale=_scale(True))
    band = base.mark_area(opacity=0.25).encode(x=x, y=alt.Y("out_p10:Q", title="output tokens"),
                                                y2="out_p90:Q", tooltip=_tips(df))
    median = base.mark_line(point=True).encode(x=x, y="out_p50:Q", tooltip=_tips(df))
    return alt.layer(band, median).interactive()


def turns_and_growth(turns: pl.DataFrame, growth: pl.DataFrame) -> alt.HConcatChart:
    """Turns per session (bars, up to 30) and median context / new-prompt tokens per turn
    (sessions module)."""
    t = turns.filter(pl.col("turns") <= 30)
    bars_ = alt.Chart(t, title="Turns per session", height=HEIGHT).mark_bar().encode(
        x=alt.X("turns:Q", title="turns per session"),
        y=alt.Y("share:Q", title="share of sessions"), tooltip=_tips(t)).interactive(
        name="zoom_turns")
    long = growth.unpivot(["context_p50", "prompt_p50"], index="turn", variable_name="median",
                          value_name="tokens").with_columns(
        pl.col("median").replace({"context_p50": "context (median)",
                                  "prompt_p50": "new prompt (median)"}))
    growth_ = lines(long, "turn", "tokens", title="Prompt growth across turns", x_title="turn",
                    y_title="tokens", series="median", zoom="zoom_growth",
                    legend_at="top-left")
    return alt.hconcat(bars_, growth_)


def lru_hit_ratio(lru: pl.DataFrame, reuse_share: float | None) -> alt.Chart:
    """Prefix-cache hit ratio against LRU capacity (prefix_cache.lru_hit_ratios), with the
    unbounded cache's hit ratio as a dashed rule."""
    chart = lines(lru, "capacity_blocks", "hit_ratio", x_log=True,
                  title="KV prefix cache: LRU hit ratio vs capacity",
                  x_title="cache capacity (512-token blocks)", y_title="block hit ratio")
    if reuse_share is None:
        return chart
    rule = alt.Chart(pl.DataFrame({"unbounded cache hit ratio": [reuse_share]})).mark_rule(
        strokeDash=[4, 3], color=REFERENCE).encode(
        y="unbounded cache hit ratio:Q", tooltip=alt.Tooltip("unbounded cache hit ratio:Q",
                                                             format=".3f"))
    return alt.layer(chart, rule)


def ecdf(curves: Mapping[str, pl.DataFrame], title: str, xlabel: str) -> alt.Chart:
    """Empirical CDFs (frames with value, cdf) on a log x axis (values floored at 1e-3)."""
    df = pl.concat([d.select(curve=pl.lit(name), value=pl.max_horizontal(
        pl.col("value").cast(pl.Float64), pl.lit(1e-3)), cdf=pl.col("cdf"))
        for name, d in curves.items()])
    return lines(df, "value", "cdf", title=title, x_title=xlabel, y_title="CDF",
                 series="curve", x_log=True, step=True, points=False)


def bars(df: pl.DataFrame, label: str, value: str, title: str, ylabel: str,
         top: int = 15) -> alt.Chart:
    """Horizontal bars of `value` by `label` (the `top` largest, largest on top; the value
    axis zooms); the tooltip shows every column of the row."""
    d = df.sort(value, descending=True, nulls_last=True).head(top).with_columns(
        pl.col(label).cast(pl.String), pl.col(value).fill_null(0))
    return alt.Chart(d, title=title, height=alt.Step(22)).mark_bar().encode(
        x=alt.X(f"{value}:Q", title=ylabel),
        y=alt.Y(f"{label}:N", title=None, sort=d[label].to_list()), tooltip=_tips(d)
    ).interactive(bind_y=False)


def series_lines(df: pl.DataFrame, title: str, ylabel: str) -> alt.Chart:
    """One line per series over time (frame with series, ts, value)."""
    d = df.with_columns(pl.col("series").cast(pl.String))
    x_type = "T" if d.schema["ts"].is_temporal() else "Q"
    return lines(d, "ts", "value", title=title, x_title=None, y_title=ylabel, series="series",
                 x_type=x_type)


def vm_variability(var: pl.DataFrame) -> alt.Chart:
    """p1 and p99 relative to the median per benchmark group, colored by SKU / lifespan, p99
    on a log axis; the tooltip names the benchmark."""
    df = var.with_columns(sku_lifespan=pl.col("vm_sku").cast(pl.String).fill_null("?") + " / "
                          + pl.col("vm_lifespan").cast(pl.String).fill_null("?"))
    chart = alt.Chart(df, title="Run-to-run variability per benchmark (p1 / p99 relative to "
                      "median)", height=HEIGHT).mark_point(size=20, filled=True).encode(
        **_xy("p1_rel", "p99_rel", "p1 / median", "p99 / median", y_log=True),
        tooltip=_tips(df))
    return _legend_filter([chart], "sku_lifespan", "SKU / lifespan")[0].interactive()


# -- predictors (prediction_plots.py) --------------------------------------------------------
def _diagonal(lo: float, hi: float, label: str) -> alt.Chart:
    d = pl.DataFrame({"x": [lo, hi], "y": [lo, hi], "line": [label, label]})
    return alt.Chart(d).mark_line(strokeDash=[4, 3], color=REFERENCE).encode(
        x="x:Q", y="y:Q", tooltip=alt.Tooltip("line:N"))


def calibration(metrics: Mapping[str, Mapping[str, float]]) -> alt.Chart:
    """Empirical vs nominal coverage of p50/p90/p99, one line per model (metrics dicts with
    coverage_p50/p90/p99); the dashed diagonal is perfect calibration."""
    df = pl.DataFrame([{"model": name, "quantile": k, "nominal": level,
                        "coverage": m[f"coverage_{k}"]}
                       for name, m in metrics.items() for k, level in LEVELS.items()])
    chart = lines(df, "nominal", "coverage", series="model", x_title="nominal quantile level",
                  y_title="empirical coverage",
                  title="Calibration: share of requests at or below each predicted quantile")
    return alt.layer(_diagonal(0.45, 1.0, "ideal"), chart)


def prediction_errors(actual: np.ndarray, p50: np.ndarray, p90: np.ndarray,
                      max_points: int = 4000, seed: int = 0) -> alt.HConcatChart:
    """Left: predicted p50 and p90 vs actual output tokens (log-log, at most `max_points`
    requests, values floored at 1); right: histogram of log2(p50 / actual) clipped to +-8,
    i.e. by how many doublings the median misses."""
    y, q50, q90 = (np.maximum(np.asarray(v, float), 1.0) for v in (actual, p50, p90))
    if len(y) > max_points:
        keep = np.random.default_rng(seed).choice(len(y), max_points, replace=False)
        y, q50, q90 = y[keep], q50[keep], q90[keep]
    pts = pl.concat([pl.DataFrame({"quantile": q, "actual_tokens": y, "predicted_tokens": p})
                     for q, p in (("p90", q90), ("p50", q50))])
    scatter = alt.Chart(pts, title="Predicted vs actual", height=HEIGHT).mark_point(
        size=10, filled=True).encode(
        **_xy("actual_tokens", "predicted_tokens", "actual output tokens", "predicted tokens",
              True, True), tooltip=_tips(pts))
    scatter = _legend_filter([scatter], "quantile", legend=alt.Legend(orient="top-left"))[
        0].interactive(name="zoom_scatter")
    hi = float(max(y.max(), q90.max())) * 1.2 if len(y) else 2.0
    left = alt.layer(_diagonal(1.0, hi, "exact"), scatter)
    err = np.log2(q50 / y)
    counts, edges = np.histogram(np.clip(err, -8, 8), bins=48)
    hist = pl.DataFrame({"log2_lo": edges[:-1], "log2_hi": edges[1:], "requests": counts})
    title = (f"Median error: {np.median(np.abs(err)):.2f} doublings" if len(err)
             else "Median error")
    right = alt.Chart(hist, title=title, height=HEIGHT).mark_bar().encode(
        x=alt.X("log2_lo:Q", title="log2(predicted p50 / actual)"), x2="log2_hi:Q",
        y=alt.Y("requests:Q", title="requests"), y2=alt.datum(0),  # vertical bars
        tooltip=_tips(hist)).interactive(
        name="zoom_errors")
    zero = alt.Chart(pl.DataFrame({"exact": [0.0]})).mark_rule(
        strokeDash=[4, 3], color=REFERENCE).encode(x="exact:Q", tooltip="exact:Q")
    return alt.hconcat(left, alt.layer(right, zero))


def _grouped_bars(df: pl.DataFrame, category: str, group: str, value: str, *, title: str,
                  value_title: str, horizontal: bool = False, log: bool = False,
                  ) -> alt.Chart:
    """Bars of `value` per `category`, one bar per `group` side by side (legend filters the
    groups); categories in frame order; the value axis zooms."""
    order = df[category].unique(maintain_order=True).to_list()
    cat = (alt.Y if horizontal else alt.X)(f"{category}:N", title=None, sort=order,
                                           axis=alt.Axis(labelLimit=320))
    val = (alt.X if horizontal else alt.Y)(f"{value}:Q", title=value_title, scale=_scale(log))
    off = (alt.YOffset if horizontal else alt.XOffset)(f"{group}:N")
    enc = {"y": cat, "x": val} if horizontal else {"x": cat, "y": val}
    positive = df.filter(pl.col(value) > 0)[value]
    if log and positive.len():  # a log axis has no 0: bars start a decade below the least
        enc["x2" if horizontal else "y2"] = alt.datum(10.0 ** np.floor(np.log10(
            positive.min())))
    height = alt.Step(12 + 10 * df[group].n_unique()) if horizontal else HEIGHT
    chart = alt.Chart(df, title=title, height=height).mark_bar().encode(
        **enc, **{"yOffset" if horizontal else "xOffset": off}, tooltip=_tips(df))
    return _legend_filter([chart], group)[0].interactive(bind_x=not horizontal,
                                                         bind_y=horizontal)


def whatif_policies(result: pl.DataFrame) -> alt.Chart:
    """Mean and p99 job completion time (s) per scheduling policy (a `whatif` frame)."""
    df = result.select("policy", **{"mean JCT": "mean_jct_s", "p99 JCT": "p99_jct_s"}).unpivot(
        index="policy", variable_name="statistic", value_name="seconds")
    return _grouped_bars(df, "policy", "statistic", "seconds",
                         title=f"What-if at load {result['load'][0]:.2f} "
                         f"({result['arrival_rps'][0]:.2f} req/s)",
                         value_title="job completion time (s)")


def predicted_vs_measured(measured: np.ndarray, predicted: Mapping[str, np.ndarray],
                          title: str, unit: str = "ms", log: bool = True) -> alt.Chart:
    """Each predictor's value against the measured one (in `unit`; log-log with `log`), one
    color per predictor, with the dashed `exact` diagonal."""
    y = np.asarray(measured, float)
    df = pl.concat([pl.DataFrame({"method": name, "measured": y,
                                  "predicted": np.asarray(p, float)})
                    for name, p in predicted.items()])
    lo = float(min(y.min(), df["predicted"].min()))
    hi = float(max(y.max(), df["predicted"].max()))
    chart = alt.Chart(df, title=title, height=HEIGHT + 60).mark_point(
        size=12, filled=True).encode(
        **_xy("measured", "predicted", f"measured ({unit})", f"predicted ({unit})", log, log),
        tooltip=_tips(df))
    chart = _legend_filter([chart], "method")[0].interactive()
    return alt.layer(_diagonal(lo, hi, "exact"), chart)


def device_estimates(est: pl.DataFrame, title: str) -> alt.Chart:
    """Horizontal bars of estimated latency (ms, log axis) per device, one bar per method
    (frame [device, method, ms]); devices in frame order, the first on top."""
    return _grouped_bars(est, "device", "method", "ms", title=title, horizontal=True, log=True,
                         value_title="latency (ms)")


# -- MoE (moe_plots.py) ------------------------------------------------------------------------
def share_heatmap(shares: pl.DataFrame, title: str) -> alt.Chart:
    """Expert-load shares as a heatmap: one row per (domain, layer), one column per expert
    (a `moe.shares` frame of one model and assignment); color = share x experts (1 = even),
    from 0 to max(2, its 99th percentile)."""
    experts = shares["expert"].n_unique()
    df = shares.select("domain", "layer", "expert", "share").with_columns(
        row=pl.col("domain").cast(pl.String) + " / L" + pl.col("layer").cast(pl.String),
        load_vs_even=pl.col("share").fill_null(0.0) * experts).sort("domain", "layer", "expert")
    top = max(2.0, float(df["load_vs_even"].quantile(0.99) or 0.0))
    rows = df["row"].unique(maintain_order=True).to_list()
    return alt.Chart(df, title=title, height=alt.Step(12)).mark_rect(
    ).encode(x=alt.X("expert:O", title="expert"), y=alt.Y("row:N", title=None, sort=rows),
             color=alt.Color("load_vs_even:Q", title="load / even share",
                             scale=alt.Scale(scheme="magma", domain=[0, top], clamp=True)),
             tooltip=_tips(df.drop("row")))


def imbalance_figure(imb: pl.DataFrame, metric: str = "maxvio") -> alt.Chart:
    """Bars of `metric` (mean) per domain, one bar per layer (legend filters layers), one
    panel per (model, assignment)."""
    df = (imb.with_columns(domain=pl.col("domain").cast(pl.String).fill_null("all"),
                           layer=pl.lit("layer ") + pl.col("layer").cast(pl.String),
                           panel=pl.col("model") + " (" + pl.col("assignment") + ")")
          .group_by("panel", "domain", "layer").agg(pl.col(metric).mean())
          .sort("panel", "domain", "layer"))
    panels = df["panel"].unique().to_list()
    chart = _grouped_bars(df, "domain", "layer", metric, title=f"{metric} per domain and layer",
                          value_title=metric)
    if len(panels) == 1:
        return chart.properties(title=panels[0])
    return chart.properties(title="").facet(column=alt.Column("panel:N", title=None))


PHASE_COLORS = {"surge": "#fdd49e", "stabilization": "#d9f0d3", "relaxation": "#c6dbef"}


def trajectory_figure(traj: pl.DataFrame, phases: pl.DataFrame | None) -> alt.FacetChart:
    """gamma_eff vs training step per layer (one panel each): multi-type estimate with its
    bootstrap CI band, single-type estimate dashed, phase segments shaded behind."""
    cols = ["layer", "step", "gamma", "gamma_lo", "gamma_hi", "gamma_single"]
    lines_ = traj.select(cols).unpivot(["gamma", "gamma_single"], index=["layer", "step"],
                                       variable_name="estimate", value_name="gamma_eff")
    lines_ = lines_.with_columns(pl.col("estimate").replace(
        {"gamma": "multi-type", "gamma_single": "single-type"}), kind=pl.lit("line"))
    band = traj.select("layer", "step", "gamma_lo", "gamma_hi").drop_nulls().with_columns(
        kind=pl.lit("band"))
    segs = (phases.select("layer", "phase", "start", "end").with_columns(kind=pl.lit("phase"))
            if phases is not None and not phases.is_empty() else None)
    df = pl.concat([lines_, band] + ([segs] if segs is not None else []), how="diagonal")
    base = alt.Chart(height=HEIGHT - 60, width=280)
    layers = []
    if segs is not None:
        layers.append(base.mark_rect(opacity=0.5).transform_filter(
            alt.datum.kind == "phase").encode(
            x="start:Q", x2="end:Q",
            fill=alt.Fill("phase:N", scale=alt.Scale(domain=list(PHASE_COLORS),
                                                     range=list(PHASE_COLORS.values()))),
            tooltip=["phase:N", "start:Q", "end:Q"]))
    layers.append(base.mark_area(opacity=0.25).transform_filter(alt.datum.kind == "band").encode(
        x="step:Q", y="gamma_lo:Q", y2="gamma_hi:Q",
        tooltip=["step:Q", alt.Tooltip("gamma_lo:Q", format=".4~g"),
                 alt.Tooltip("gamma_hi:Q", format=".4~g")]))
    line = base.mark_line(point=True).transform_filter(alt.datum.kind == "line").encode(
        x=alt.X("step:Q", title="training step"),
        y=alt.Y("gamma_eff:Q", title="gamma_eff", scale=alt.Scale(zero=False)),
        strokeDash=alt.StrokeDash("estimate:N"),  # one legend with the color
        tooltip=["estimate:N", "step:Q", alt.Tooltip("gamma_eff:Q", format=".4~g")])
    layers.append(_legend_filter([line], "estimate")[0])
    return alt.layer(*layers, data=df).facet(
        column=alt.Column("layer:N", title="layer")).properties(
        title="gamma_eff over training")


def load_curve(curve: pl.DataFrame, ttft_ms: float | None = None,
               tpot_ms: float | None = None) -> alt.HConcatChart:
    """p99 TTFT and p99 TPOT (ms, log) vs offered rate (req/s) of a latency-vs-load curve
    (`analytics.capacity.curve_frame`), the SLO limits as gray dashed rules: the static
    `capacity.curve_figure` as two zoomable panels."""
    panels = []
    for metric, limit, label in (("p99_ttft_ms", ttft_ms, "p99 TTFT (ms)"),
                                 ("p99_tpot_ms", tpot_ms, "p99 TPOT (ms)")):
        df = curve.select("rate", "load", metric)
        chart = lines(df, "rate", metric, title=f"{label} vs load", x_title="offered load "
                      "(req/s)", y_title=label, y_log=True, zoom=f"zoom_{metric}")
        if limit:
            rule = alt.Chart(pl.DataFrame({"limit": [float(limit)]})).mark_rule(
                color=REFERENCE, strokeDash=[6, 4]).encode(
                y="limit:Q", tooltip=[alt.Tooltip("limit:Q", title="SLO limit (ms)")])
            chart = chart + rule
        panels.append(chart)
    return alt.hconcat(*panels)
