"""Every chart builder of analytics/interactive.py on the frames the dashboard pages feed it
(computed by the analytics modules from small real stores): the Vega-Lite spec carries the
title, the log axes, the data rows, the layers / panels, a tooltip on every mark, the zoom
and legend selections, and the caps (`max_points`, `top`) its inputs ask for."""

from __future__ import annotations

import altair as alt
import numpy as np
import polars as pl
import pytest

from servecast import simulator
from servecast.analytics import (
    arrivals,
    cluster,
    failures,
    interactive,
    lengths,
    moe,
    prefix_cache,
    sessions,
    vm_noise,
)


@pytest.fixture(scope="module")
def store(figures_store):
    return figures_store


# -- reading a Vega-Lite spec ------------------------------------------------------------------
def spec(chart: alt.TopLevelMixin) -> dict:
    with alt.data_transformers.disable_max_rows():  # as the dashboard's download does
        return chart.to_dict()


def views(node) -> list[dict]:
    """Every unit view (a dict with a mark) in the spec, depth first."""
    if isinstance(node, dict):
        own = [node] if "mark" in node else []
        return own + [v for k, x in node.items() if k != "datasets" for v in views(x)]
    if isinstance(node, list):
        return [v for x in node for v in views(x)]
    return []


def mark(view: dict) -> str:
    return view["mark"]["type"] if isinstance(view["mark"], dict) else view["mark"]


def rows(s: dict, view: dict | None = None) -> list[dict]:
    """The data rows of `view` (or of the top level)."""
    data = (view or s).get("data") or s["data"]
    return s["datasets"][data["name"]]


def title(s: dict) -> str | None:
    """The chart's title: its own, else that of its first titled layer."""
    t = s.get("title") or next((v["title"] for v in s.get("layer", []) if v.get("title")), None)
    return t["text"] if isinstance(t, dict) else t


def log_axes(view: dict) -> set[str]:
    return {ch for ch in ("x", "y") if view["encoding"].get(ch, {}).get("scale", {}).get("type")
            == "log"}


def params(s: dict) -> list[dict]:
    """Every selection / zoom parameter declared anywhere in the spec."""
    out = list(s.get("params", []))
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in s.get(key, []):
            out += params(sub)
    if "spec" in s:
        out += params(s["spec"])
    return out


def zooms(s: dict) -> list[dict]:
    return [p for p in params(s) if p.get("bind") == "scales"]


def legend_selections(s: dict) -> list[dict]:
    return [p for p in params(s) if p.get("bind") == "legend"]


def assert_tooltips(s: dict) -> None:
    for v in views(s):
        assert v["encoding"].get("tooltip"), f"no tooltip on {mark(v)}"


# -- characterization (Traces, Cluster, VM noise pages) ------------------------------------------
def test_rate_failure_and_load_series(store):
    rs = arrivals.rate_series(store, "code", bin_s=60.0)
    s = spec(interactive.rate_series(series=rs, bin_s=60.0))
    assert title(s) == "Request rate (1 min bins)" and mark(s) == "line"
    assert len(rows(s)) == rs.height and {"t_min", "rate_per_s"} <= set(rows(s)[0])
    assert s["encoding"]["y"]["field"] == "rate_per_s" and not log_axes(s)
    assert len(zooms(s)) == 1
    assert_tooltips(s)

    fs = failures.failure_series(store, "sessions", bin_s=600.0)
    s = spec(interactive.failure_series(fs, 600.0))
    assert title(s).startswith("Failure rate over time") and len(rows(s)) == fs.height
    assert s["encoding"]["y"]["field"] == "failure_rate"
    assert_tooltips(s)

    groups = failures.failure_vs_load(store, "sessions", bin_s=60.0, groups=3)
    s = spec(interactive.failure_vs_load(groups=groups))
    assert len(rows(s)) == groups.height
    assert s["encoding"]["x"]["field"] == "load_mean" and s["mark"]["point"]
    assert_tooltips(s)


def test_interarrival_ccdf_fits_log_log(store):
    gaps = arrivals.interarrival_sample(store, "code", n=20_000)
    fits = arrivals.interarrival_fits(store, "code", n=20_000)
    s = spec(interactive.interarrival_ccdf(gaps=gaps, fits=fits))
    assert title(s) == "Inter-arrival time: empirical vs fitted (CCDF)"
    assert [mark(v) for v in s["layer"]] == ["point", "line"]
    assert all(log_axes(v) == {"x", "y"} for v in s["layer"])
    data = rows(s)
    curves = {r["curve"] for r in data}
    assert "trace" in curves and len(curves) == 1 + fits.height  # one curve per family
    assert any("(best KS)" in c for c in curves)
    trace_pts = sum(r["curve"] == "trace" for r in data)
    assert 0 < trace_pts <= 2 * 2000  # the empirical CCDF is thinned to ~2000 points
    assert min(r["ccdf"] for r in data) > 0  # clamped to the floor, never 0 on a log axis
    assert len(legend_selections(s)) == 1
    assert_tooltips(s)
    # no positive gap: an empty chart, not an error
    empty = spec(interactive.interarrival_ccdf(np.zeros(3), fits))
    assert rows(empty) == []


def test_length_histograms_and_conditional_output(store):
    prompt = lengths.length_histogram(store, "code", field="prompt_tokens")
    output = lengths.length_histogram(store, "code", field="output_tokens")
    s = spec(interactive.length_histograms(prompt=prompt, output=output))
    data = rows(s)
    assert len(data) == prompt.height + output.height
    assert {r["length"] for r in data} == {"prompt", "output"}
    assert log_axes(s) == {"x"} and s["mark"]["interpolate"] == "step-after"
    assert min(r["tokens"] for r in data) >= 0.5  # the 0-token bin stays on the log axis
    assert len(legend_selections(s)) == 1  # two series: a legend that filters
    assert_tooltips(s)

    cond = lengths.conditional_output(store, "code")
    assert cond.height
    s = spec(interactive.conditional_output(cond=cond))
    assert [mark(v) for v in s["layer"]] == ["area", "line"]
    band, median = s["layer"]
    assert band["encoding"]["y2"]["field"] == "out_p90" and median["encoding"]["y"]["field"] \
        == "out_p50"
    assert log_axes(band) == {"x"}
    assert [r["out_p50"] for r in rows(s)] == cond["out_p50"].to_list()
    assert_tooltips(s)


def test_turns_and_growth_and_lru(store):
    turns = sessions.turns_distribution(store, "sessions")
    growth = sessions.prompt_growth(store, "sessions")
    s = spec(interactive.turns_and_growth(turns=turns, growth=growth))
    left, right = s["hconcat"]
    assert mark(left) == "bar" and title(left) == "Turns per session"
    assert len(rows(s, left)) == turns.filter(pl.col("turns") <= 30).height
    assert len(rows(s, right)) == 2 * growth.height  # context and new prompt per turn
    assert {r["median"] for r in rows(s, right)} == {"context (median)", "new prompt (median)"}
    assert {p["name"] for p in zooms(s)} == {"zoom_turns", "zoom_growth"}
    assert right["encoding"]["color"]["legend"]["orient"] == "top-left"
    assert_tooltips(s)

    lru = prefix_cache.lru_hit_ratios(store, "mooncake", capacities=[64, 1024, 16384])
    share = prefix_cache.prefix_reuse(store, "mooncake")["reuse_share"]
    s = spec(interactive.lru_hit_ratio(lru=lru, reuse_share=share))
    line, rule = s["layer"]
    assert log_axes(line) == {"x"} and len(rows(s, line)) == 3
    assert mark(rule) == "rule" and rows(s, rule) == [{"unbounded cache hit ratio": share}]
    assert_tooltips(s)
    alone = spec(interactive.lru_hit_ratio(lru, None))
    assert "layer" not in alone and mark(alone) == "line"  # no unbounded-cache rule


def test_ecdf_bars_and_cluster_series(store):
    durations = cluster.duration_ecdf(store, "helios", points=50)
    s = spec(interactive.ecdf(curves={"helios": durations}, title="Job duration (CDF)",
                              xlabel="duration (s)"))
    assert title(s) == "Job duration (CDF)" and s["encoding"]["x"]["title"] == "duration (s)"
    assert log_axes(s) == {"x"} and len(rows(s)) == durations.height
    assert min(r["value"] for r in rows(s)) >= 1e-3  # floored for the log axis
    assert not legend_selections(s)  # one curve: no legend
    two = spec(interactive.ecdf({"a": durations, "b": durations.head(5)}, "t", "x"))
    assert len(rows(two)) == durations.height + 5 and len(legend_selections(two)) == 1

    status = cluster.status_breakdown(store, "helios")
    top = min(2, status.height)
    s = spec(interactive.bars(df=status, label="status", value="jobs",
                              title="Jobs by final status", ylabel="jobs", top=top))
    assert mark(s) == "bar" and title(s) == "Jobs by final status"
    assert len(rows(s)) == top
    assert [r["jobs"] for r in rows(s)] == status["jobs"].sort(descending=True).head(
        top).to_list()  # the largest, largest first
    assert s["encoding"]["y"]["sort"] == [r["status"] for r in rows(s)]
    assert_tooltips(s)
    var = vm_noise.variability(store, "vm")
    assert len(rows(spec(interactive.bars(var, "test_name", "cv", "cv", "cv")))) == min(
        15, var.height)  # the default top

    values = cluster.series_values(store, "helios", "running_gpu_num", every="1 day")
    s = spec(interactive.series_lines(df=values, title="GPUs", ylabel="running GPUs"))
    assert title(s) == "GPUs" and s["encoding"]["y"]["title"] == "running GPUs"
    assert s["encoding"]["x"]["type"] == "temporal" and len(rows(s)) == values.height
    assert_tooltips(s)


def test_vm_variability_and_series(store):
    var = vm_noise.variability(store, "vm")
    s = spec(interactive.vm_variability(var=var))
    assert mark(s) == "point" and log_axes(s) == {"y"}
    assert len(rows(s)) == var.height and all(" / " in r["sku_lifespan"] for r in rows(s))
    assert s["encoding"]["color"]["title"] == "SKU / lifespan"
    assert len(legend_selections(s)) == 1 and len(zooms(s)) == 1
    assert any(t["field"] == "test_name" for t in s["encoding"]["tooltip"])

    test = var["test_name"].sort()[0]
    series = vm_noise.vm_series(store, "vm", test_name=test)
    frame = series.select(series=series["vm_sku"].fill_null("?") + " / "
                          + series["vm_lifespan"].fill_null("?"), ts="ts", value="value")
    s = spec(interactive.series_lines(frame, f"{test}: daily median", "value"))
    assert title(s) == f"{test}: daily median" and len(rows(s)) == frame.height
    assert_tooltips(s)


# -- predictors (Output length, GPU kernels pages) -----------------------------------------------
@pytest.fixture(scope="module")
def outputs(store) -> np.ndarray:
    return store.sql("SELECT output_tokens FROM llm_requests WHERE trace = 'code' "
                     "ORDER BY request_id LIMIT 600")["output_tokens"].to_numpy()


def test_calibration_and_prediction_errors(outputs):
    y = outputs.astype(float)
    p50, p90 = np.full_like(y, np.median(y)), np.full_like(y, np.quantile(y, 0.9))
    metrics = {"global quantiles": {f"coverage_{k}": float(np.mean(y <= p)) for k, p in
                                    (("p50", p50), ("p90", p90), ("p99", p90 * 2))},
               "ideal-ish": {"coverage_p50": 0.5, "coverage_p90": 0.9, "coverage_p99": 0.99}}
    s = spec(interactive.calibration(metrics=metrics))
    diagonal, chart = s["layer"]
    assert rows(s, diagonal)[0]["line"] == "ideal" and diagonal["mark"]["strokeDash"]
    assert len(rows(s, chart)) == 2 * 3  # 3 quantile levels per model
    assert {r["model"] for r in rows(s, chart)} == set(metrics)
    assert [r["nominal"] for r in rows(s, chart)][:3] == [0.5, 0.9, 0.99]
    assert_tooltips(s)

    s = spec(interactive.prediction_errors(actual=y, p50=p50, p90=p90, max_points=100, seed=1))
    left, right = s["hconcat"]
    scatter = left["layer"][1]
    assert len(rows(s, scatter)) == 2 * 100  # p50 and p90 of at most max_points requests
    assert log_axes(scatter) == {"x", "y"}
    assert min(r["actual_tokens"] for r in rows(s, scatter)) >= 1.0  # floored at 1
    hist = right["layer"][0]
    assert sum(r["requests"] for r in rows(s, hist)) == 100 and len(rows(s, hist)) == 48
    assert title(hist).startswith("Median error: ")
    assert {p["name"] for p in zooms(s)} == {"zoom_scatter", "zoom_errors"}
    assert_tooltips(s)
    again = spec(interactive.prediction_errors(y, p50, p90, 100, 1))
    assert again["datasets"] == s["datasets"]  # the seed fixes the sample
    small = spec(interactive.prediction_errors(y[:50], p50[:50], p90[:50]))
    assert sum(r["requests"] for r in rows(small, small["hconcat"][1]["layer"][0])) == 50


def test_whatif_predicted_vs_measured_device_estimates(store, outputs):
    frame = store.sql("SELECT arrival_s, prompt_tokens, output_tokens FROM llm_requests "
                      "WHERE trace = 'code' ORDER BY arrival_s LIMIT 300")
    o = frame["output_tokens"].to_numpy().astype(float)
    res = simulator.whatif(frame, o, o, policies=("fcfs", "sjf_oracle"))
    s = spec(interactive.whatif_policies(result=res))
    assert title(s).startswith(f"What-if at load {res['load'][0]:.2f}")
    assert len(rows(s)) == 4  # mean + p99 per policy
    assert {r["statistic"] for r in rows(s)} == {"mean JCT", "p99 JCT"}
    assert s["encoding"]["xOffset"]["field"] == "statistic" and not log_axes(s)
    assert len(legend_selections(s)) == 1
    assert_tooltips(s)

    y = outputs.astype(float) + 1.0
    s = spec(interactive.predicted_vs_measured(measured=y, predicted={"a": y * 1.5, "b": y},
                                               title="t", unit="tokens", log=False))
    diagonal, chart = s["layer"]
    assert not log_axes(chart) and chart["encoding"]["x"]["title"] == "measured (tokens)"
    assert len(rows(s, chart)) == 2 * len(y)
    assert [r["x"] for r in rows(s, diagonal)] == [y.min(), 1.5 * y.max()]
    assert title(chart) == "t"
    assert_tooltips(s)
    s = spec(interactive.predicted_vs_measured(y, {"a": y}, "ms"))
    assert log_axes(s["layer"][1]) == {"x", "y"} and "(ms)" in s["layer"][1]["encoding"]["x"][
        "title"]

    est = pl.DataFrame({"device": ["H100", "A100", "L4"] * 2,
                        "method": ["roofline"] * 3 + ["model"] * 3,
                        "ms": [0.02, 0.05, 0.3, 0.03, 0.04, 0.25]})
    s = spec(interactive.device_estimates(est=est, title="bmm: estimate per device"))
    assert title(s) == "bmm: estimate per device" and log_axes(s) == {"x"}
    assert s["encoding"]["y"]["sort"] == ["H100", "A100", "L4"]  # frame order, first on top
    assert s["encoding"]["x2"]["datum"] == 0.01  # bars start a decade below the least
    assert len(rows(s)) == 6
    assert_tooltips(s)


# -- MoE page ----------------------------------------------------------------------------------
def test_share_heatmap_and_imbalance(store):
    shares = moe.shares(store, "olmoe")
    model, assign = shares["model"][0], shares["assignment"][0]
    sel = (pl.col("model") == model) & (pl.col("assignment") == assign)
    one = shares.filter(sel)
    s = spec(interactive.share_heatmap(shares=one, title="loads"))
    assert mark(s) == "rect" and title(s) == "loads" and len(rows(s)) == one.height
    experts = one["expert"].n_unique()
    assert rows(s)[0]["load_vs_even"] == pytest.approx((rows(s)[0]["share"] or 0) * experts)
    scale = s["encoding"]["color"]["scale"]
    assert scale["domain"][0] == 0 and scale["domain"][1] >= 2.0
    assert "row" not in {t["field"] for t in s["encoding"]["tooltip"]}

    imb = moe.imbalance(store, "olmoe").filter(sel)
    s = spec(interactive.imbalance_figure(imb=imb, metric="cv"))
    assert title(s) == f"{model} ({assign})"  # one panel: titled with it
    assert s["encoding"]["y"]["field"] == "cv" and len(legend_selections(s)) == 1
    assert_tooltips(s)
    every = moe.imbalance(store, "olmoe")
    panels = every.select("model", "assignment").unique().height
    assert panels > 1  # the shared OLMoE data: several (model, assignment) pairs
    s = spec(interactive.imbalance_figure(every))
    assert s["facet"]["column"]["field"] == "panel"  # one panel per pair
    assert len({r["panel"] for r in rows(s)}) == panels
    assert views(s)[0]["encoding"]["y"]["field"] == "maxvio"


def test_trajectory_figure_with_and_without_phases(trajectory):
    traj, phases = trajectory
    s = spec(interactive.trajectory_figure(traj=traj, phases=phases))
    assert title(s) == "gamma_eff over training" and s["facet"]["column"]["field"] == "layer"
    assert [mark(v) for v in s["spec"]["layer"]] == ["rect", "area", "line"]
    kinds = [r["kind"] for r in rows(s)]
    assert kinds.count("line") == 2 * traj.height and kinds.count("phase") == 1
    assert kinds.count("band") == traj.height
    assert_tooltips(s)
    s = spec(interactive.trajectory_figure(traj, None))
    assert [mark(v) for v in s["spec"]["layer"]] == ["area", "line"]  # no phase shading


# -- the generic line builder ------------------------------------------------------------------
def test_lines_options():
    df = pl.DataFrame({"x": [1.0, 10.0, 100.0] * 2, "y": [0.1, 0.5, 1.0, 0.2, 0.6, 0.9],
                       "s": ["a"] * 3 + ["b"] * 3})
    s = spec(interactive.lines(df=df, x="x", y="y", title="T", x_title="X", y_title="Y",
                               series="s", x_log=True, y_log=True, step=True, points=False,
                               x_type="Q", zoom="zoom_p", legend_at="top-left"))
    assert title(s) == "T" and log_axes(s) == {"x", "y"}
    assert s["encoding"]["x"]["title"] == "X" and s["encoding"]["y"]["title"] == "Y"
    assert s["mark"]["interpolate"] == "step-after" and not s["mark"]["point"]
    assert s["encoding"]["color"]["legend"]["orient"] == "top-left"
    assert [p["name"] for p in zooms(s)] == ["zoom_p"] and len(legend_selections(s)) == 1
    assert len(rows(s)) == 6
    plain = spec(interactive.lines(df, "x", "y", title="T", x_title="X", y_title="Y",
                                   x_type="O"))
    assert plain["encoding"]["x"]["type"] == "ordinal" and "scale" not in plain["encoding"]["x"]
    assert plain["mark"]["interpolate"] == "linear" and plain["mark"]["point"]
    assert "color" not in plain["encoding"] and plain["encoding"]["y"]["scale"]["zero"] is False
