"""Every figure function of analytics/plots.py, moe_plots.py and prediction_plots.py on
frames the analytics compute from the shared traces: the figure has the panels, lines and
bars its inputs ask for, and the `*_plot` writers save a real PNG."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from servecast import simulator as whatif
from servecast.analytics import (
    arrivals,
    cluster,
    failures,
    lengths,
    moe,
    moe_plots,
    plots,
    prefix_cache,
    sessions,
    vm_noise,
)
from servecast.analytics import prediction_plots as pp

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(figures_store):
    return figures_store


def lines(fig: Figure) -> int:
    return sum(len(ax.get_lines()) for ax in fig.axes)


def bars(fig: Figure) -> int:
    return sum(len(ax.patches) for ax in fig.axes)


def test_arrival_and_length_figures(store):
    rs = arrivals.rate_series(store, "code", bin_s=60.0)
    fig = plots.rate_series(series=rs, bin_s=60.0)
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == rs.height
    gaps = arrivals.interarrival_sample(store, "code")
    fits = arrivals.interarrival_fits(store, "code")
    fig = plots.interarrival_ccdf(gaps=gaps, fits=fits)
    assert lines(fig) >= 1 + fits.height  # the empirical CCDF + one per family
    prompt = lengths.length_histogram(store, "code", "prompt_tokens")
    output = lengths.length_histogram(store, "code", "output_tokens")
    fig = plots.length_histograms(prompt=prompt, output=output)
    assert [len(ln.get_xdata()) for ln in fig.axes[0].get_lines()] == [prompt.height,
                                                                        output.height]
    cond = lengths.conditional_output(store, "code")
    fig = plots.conditional_output(cond=cond)
    median = fig.axes[0].get_lines()[0]
    assert list(median.get_ydata()) == cond["out_p50"].to_list()  # + the p10-p90 band
    assert fig.axes[0].collections
    profile = pl.DataFrame({"day": [0, 0, 1], "hour": [0, 1, 0], "days_seen": [1, 1, 1],
                            "requests": [10, 20, 30], "rate_per_s": [0.1, 0.2, 0.3]})
    fig = plots.weekly_heatmap(profile=profile)
    assert fig.axes[0].images  # a heatmap
    nrows, ncols = 2, 3
    fig, axes = plots.figure(nrows=nrows, ncols=ncols)
    assert len(fig.axes) == 6 and axes.shape == (2, 3)


def test_failure_session_prefix_figures(store):
    fs = failures.failure_series(store, "sessions", bin_s=600.0)
    assert lines(plots.failure_series(series=fs, bin_s=600.0)) >= 1
    groups = failures.failure_vs_load(store, "sessions", bin_s=60.0, groups=3)
    fig = plots.failure_vs_load(groups=groups)
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == groups.height
    turns = sessions.turns_distribution(store, "sessions")
    growth = sessions.prompt_growth(store, "sessions")
    fig = plots.turns_and_growth(turns=turns, growth=growth)
    assert len(fig.axes) == 2 and bars(fig) >= turns.height
    lru = prefix_cache.lru_hit_ratios(store, "mooncake", capacities=[64, 1024, 16384])
    share = prefix_cache.prefix_reuse(store, "mooncake")["reuse_share"]
    fig = plots.lru_hit_ratio(lru=lru, reuse_share=share)
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    assert lines(plots.lru_hit_ratio(lru, None)) < lines(fig)  # no reuse line without it


def test_generic_and_cluster_vm_figures(store):
    curves = {"prompt": pl.DataFrame({"value": [1.0, 10.0, 100.0], "cdf": [0.1, 0.5, 1.0]}),
              "output": pl.DataFrame({"value": [2.0, 20.0], "cdf": [0.5, 1.0]})}
    fig = plots.ecdf(curves=curves, title="lengths", xlabel="tokens")
    assert lines(fig) == 2 and fig.axes[0].get_xlabel() == "tokens"
    var = vm_noise.variability(store, "vm")
    fig = plots.bars(df=var, label="test_name", value="cv", title="cv", ylabel="cv", top=3)
    assert bars(fig) == 3
    values = cluster.series_values(store, "helios", "running_gpu_num", every="1 day")
    fig = plots.series_lines(df=values, title="GPUs", ylabel="running GPUs")
    assert lines(fig) == values["series"].n_unique()
    assert plots.vm_variability(var=var).axes
    x = store.sql("SELECT value FROM vm_measurements WHERE trace = 'vm'")["value"].to_numpy()
    fig = plots.histogram(values=np.append(x, np.nan), title="values", xlabel="v", bins=7)
    assert bars(fig) == 7


def test_prediction_figures(store):
    y = store.sql("SELECT output_tokens FROM llm_requests WHERE trace = 'code' "
                  "ORDER BY request_id LIMIT 600")["output_tokens"].to_numpy()
    fig = pp.calibration(metrics={"a": {"coverage_p50": 0.5, "coverage_p90": 0.88,
                                        "coverage_p99": 0.98}})
    assert lines(fig) == 2  # ideal + one model
    fig = pp.prediction_errors(actual=y, p50=y * 1.1, p90=y * 2, max_points=100, seed=1)
    assert len(fig.axes[0].collections[0].get_offsets()) == 100
    frame = store.sql("SELECT arrival_s, prompt_tokens, output_tokens FROM llm_requests "
                      "WHERE trace = 'code' ORDER BY arrival_s LIMIT 300")
    o = frame["output_tokens"].to_numpy().astype(float)
    res = whatif.whatif(frame, o, o, policies=("fcfs", "sjf_oracle"))
    assert bars(pp.whatif_policies(result=res)) == 4  # mean + p99 per policy
    fig = pp.predicted_vs_measured(measured=y + 1.0, predicted={"m": y + 2.0}, title="t",
                                   unit="tokens", log=False)
    assert fig.axes[0].get_xscale() == "linear" and "tokens" in fig.axes[0].get_xlabel()
    est = pl.DataFrame({"device": ["A", "B", "A", "B"], "method": ["m", "m", "r", "r"],
                        "ms": [1.0, 2.0, 1.5, 2.5]})
    assert bars(pp.device_estimates(est=est, title="bmm")) == 4


@pytest.mark.slow  # three PNGs written: ~12 s on a loaded 2-core machine
def test_moe_figures_and_writers(store, tmp_path, trajectory):
    imb = moe.imbalance(store, "olmoe")
    groups = imb.select("model", "assignment").unique().height
    fig = moe_plots.imbalance_figure(imb=imb, metric="cv")
    assert len(fig.axes) == groups and fig.axes[0].get_ylabel() == "cv"
    out = moe_plots.imbalance_plot(imb=imb, path=tmp_path / "imb.png", metric="maxvio")
    assert out.read_bytes()[:8] == PNG
    shares = moe.shares(store, "olmoe")
    one = shares.filter((pl.col("model") == shares["model"][0])
                        & (pl.col("assignment") == shares["assignment"][0]))
    fig = moe_plots.share_heatmap(shares=one, title="loads")
    assert fig.axes[0].images and fig.axes[0].get_title() == "loads"
    traj, phases = trajectory
    fig = moe_plots.trajectory_figure(traj=traj, phases=phases)
    assert len(fig.axes) == 2 and fig.axes[0].patches  # the shaded phase on layer 0
    assert not moe_plots.trajectory_figure(traj, None).axes[0].patches
    assert moe_plots.trajectory_plot(traj=traj, phases=phases,
                                     path=tmp_path / "t.png").read_bytes()[:8] == PNG
    final = traj.rename({"step": "alpha"}).with_columns(pl.col("alpha") / 1000)
    assert moe_plots.alpha_plot(final=final, path=tmp_path / "a.png").read_bytes()[:8] == PNG
