"""The BurstGPT paper's views (per-model lengths, Zipf rank-frequency, daily and weekly
patterns) and the quantized-timestamp warning, on the shared traces and on a three-week
trace generated with a known daily and weekly rate pattern and ingested back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest

from servecast.analytics import arrivals, exports, lengths, plots, synth
from servecast.analytics.characterize import characterize
from servecast.analytics.report import write_report

pytestmark = pytest.mark.slow  # real traces and a 21-day generated trace (> 5 s)

CONV = "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
BURST = "llm/burstgpt/BurstGPT_head54.csv"
DAY_RATE, NIGHT_RATE, WEEKEND = 0.02, 0.004, 0.5  # req/s; weekend days at half the rate


@pytest.fixture(scope="module")
def store(store_of):
    return store_of(("mooncake", "llm/mooncake", "mooncake"), ("azure-llm", CONV, "conv"),
                    ("burstgpt", BURST, "b54"))


@pytest.fixture(scope="module")
def weeks(store, tmp_path_factory):
    """A store with `weeks`: 21 days of arrivals whose rate is DAY_RATE from hour 8 to 23,
    NIGHT_RATE before, times WEEKEND on days 5 and 6 of each week (lengths from conv),
    written as BurstGPT CSV and ingested back."""
    from servecast.store import Store

    tmp = tmp_path_factory.mktemp("weeks")
    rows = [{"start_s": d * 86400 + h * 3600, "duration_s": 3600,
             "rate": (DAY_RATE if h >= 8 else NIGHT_RATE) * (WEEKEND if d >= 5 else 1.0),
             "cv": 1.0, "dist": "gamma"} for d in range(7) for h in range(24)]
    (tmp / "week.json").write_text(json.dumps(rows))
    model = synth.fit_workload(store, "conv")
    model.windows = synth.read_windows(tmp / "week.json")
    df = synth.synthesize(model, 21 * 86400, seed=4)
    path = exports.write_requests(df, "burstgpt", tmp / "weeks.csv")
    s = Store(tmp / "weeks.duckdb")
    s.ingest("burstgpt", [path], trace="weeks")
    yield s
    s.close()


def test_mooncake_timestamps_are_flagged_as_quantized_and_not_fitted(store, tmp_path):
    q = arrivals.timestamp_quantization(store, "mooncake", n=50_000, max_zero_share=0.1)
    path = store.sql("SELECT file FROM traces WHERE trace = 'mooncake'").item(0, 0)
    raw = pd.read_json(path, lines=True)["timestamp"].to_numpy()
    gaps = np.diff(np.sort(raw))
    assert q["zero_gap_share"] == pytest.approx((gaps == 0).mean())
    assert q["quantized"] and q["grid_s"] == pytest.approx(3.0, rel=0.01)
    assert "90% of inter-arrival gaps are 0" in q["message"]
    summary = characterize(store, "mooncake")
    assert summary["arrivals"]["interarrival_fits"] == []
    assert summary["arrivals"]["best_fit_ks"] is None
    assert summary["warnings"] == [q["message"]]
    html = write_report(store, "mooncake", tmp_path / "mc").read_text()
    assert "timestamps are quantized" in html and "Inter-arrival fits (MLE)" not in html
    # a continuous trace is fitted as before and carries no warning
    conv = characterize(store, "conv")
    assert not conv["arrivals"]["quantization"]["quantized"] and "warnings" not in conv
    assert conv["arrivals"]["best_fit_ks"] is not None


def test_quantization_is_detected_at_any_resolution(store):
    # Azure conv (5.4 req/s) with its times cut to whole seconds: ties everywhere, 1 s grid
    rel = store.con.sql("""SELECT request_id, floor(arrival_s) AS arrival_s
                           FROM llm_requests WHERE trace = 'conv'""")
    q = arrivals.timestamp_quantization(rel)
    assert q["quantized"] and q["grid_s"] == pytest.approx(1.0)
    assert q["zero_gap_share"] > 0.5
    # at 10 ms the ties are rare: no warning, and a 10 ms grid is no grid the gaps sit on
    fine = store.con.sql("""SELECT request_id, round(arrival_s, 2) AS arrival_s
                            FROM llm_requests WHERE trace = 'conv'""")
    q = arrivals.timestamp_quantization(fine, max_zero_share=0.1)
    assert not q["quantized"] and q["message"] is None
    # the same test on gaps given directly: a 2 s batching grid with jitter
    rng = np.random.default_rng(0)
    gaps = np.where(rng.random(5000) < 0.7, 0.0, 2.0 * rng.integers(1, 4, 5000)
                    + rng.uniform(-0.01, 0.01, 5000))
    q = arrivals.gap_quantization(gaps=gaps, max_zero_share=0.5)
    assert q["quantized"] and q["grid_s"] == pytest.approx(2.0, abs=0.011)
    assert not arrivals.gap_quantization(rng.exponential(1.0, 5000))["quantized"]


def test_per_model_lengths_match_the_source_file(store, data):
    src = pd.read_csv(data / BURST)
    got = lengths.length_quantiles_by(store, "b54", by="model")
    assert got["segment"].unique(maintain_order=True).to_list() == \
        src["Model"].value_counts().index.tolist()
    for model, g in src.groupby("Model"):
        row = got.filter((pl.col("segment") == model) & (pl.col("field") == "output_tokens"))
        assert row["requests"].item() == len(g)
        assert row["p50"].item() == pytest.approx(g["Response tokens"].quantile(0.5))
        assert row["p90"].item() == pytest.approx(g["Response tokens"].quantile(0.9))
    hist = lengths.length_histogram(store, "b54", field="prompt_tokens", by="model")
    assert hist.group_by("segment").agg(pl.col("count").sum()).sort("segment")["count"] \
        .to_list() == src.groupby("Model").size().sort_index().tolist()
    summary = characterize(store, "b54")
    assert {r["segment"] for r in summary["lengths"]["by_model"]} == set(src["Model"])
    with pytest.raises(ValueError, match="model or log_type"):
        lengths.length_quantiles_by(store, "b54", by="gpu")


def test_rank_frequency_is_the_value_counts_of_the_source(store, data):
    src = pd.read_csv(data / CONV)["ContextTokens"]
    rf = lengths.rank_frequency(store, "conv", field="prompt_tokens", max_rank=50)
    counts = src[src > 0].value_counts()
    assert rf.height == 50 and rf["count"].to_list() == counts.head(50).tolist()
    assert rf["share"].item(0) == pytest.approx(counts.iloc[0] / counts.sum())
    fig = plots.rank_frequency(rf, lengths.rank_frequency(store, "conv", "output_tokens"),
                               exponents=(1.0, None))
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["prompt (s = 1.00)",
                                                                   "output"]


def test_daily_and_weekly_patterns_recover_the_generated_rates(weeks, tmp_path):
    day = arrivals.periodic_profile(weeks, "weeks", period="day")
    assert day["slot"].to_list() == list(range(24)) and set(day["seen"]) == {21}
    weekday_mean = (5 * DAY_RATE + 2 * DAY_RATE * WEEKEND) / 7
    assert day.filter(pl.col("slot") >= 8)["rate_per_s"].mean() == \
        pytest.approx(weekday_mean, rel=0.1)
    night = day.filter(pl.col("slot") < 8)["rate_per_s"].mean()
    assert night == pytest.approx(NIGHT_RATE * (5 + 2 * WEEKEND) / 7, rel=0.15)
    week = arrivals.periodic_profile(weeks, "weeks", period="week")
    assert set(week["seen"]) == {3}
    ratio = week["rate_per_s"][5:].mean() / week["rate_per_s"][:5].mean()
    assert ratio == pytest.approx(WEEKEND, rel=0.1)
    with pytest.raises(ValueError, match="day or week"):
        arrivals.periodic_profile(weeks, "weeks", period="month")
    summary = characterize(weeks, "weeks")
    assert set(summary["arrivals"]["patterns"]) == {"day", "week"}
    fig = plots.periodic_profiles({"day": day, "week": week})
    assert [len(ax.patches) for ax in fig.axes] == [24, 7]
    html = write_report(weeks, "weeks", tmp_path / "w").read_text()
    assert "Daily and weekly patterns" in html and "Zipf rank-frequency" in html


def test_length_distributions_per_segment_figure(store):
    prompt = lengths.length_histogram(store, "b54", "prompt_tokens", 10, by="model")
    output = lengths.length_histogram(store, "b54", "output_tokens", by="model")
    fig = plots.lengths_by_segment(prompt, output, top=1)
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    fig = plots.lengths_by_segment(prompt=prompt, output=output)
    assert sorted(ln.get_label() for ln in fig.axes[0].get_lines()) == ["ChatGPT", "GPT-4"]


def test_traces_page_warns_instead_of_fitting_quantized_timestamps(store, monkeypatch,
                                                                   tmp_path):
    import shutil
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    store.con.execute("CHECKPOINT")  # the page opens a copy read-only: one writer per file
    shutil.copyfile(store.path, tmp_path / "copy.duckdb")
    monkeypatch.setenv("SERVECAST_DB", str(tmp_path / "copy.duckdb"))
    page = Path(__file__).resolve().parents[1] / "app" / "pages" / "1_Traces.py"
    at = AppTest.from_file(str(page), default_timeout=600)
    at.run()
    at.selectbox(key="trace").select("mooncake").run()
    assert not at.exception and not at.error
    assert any("timestamps are quantized" in w.value for w in at.warning)
    ccdf = "Inter-arrival time: empirical vs fitted (CCDF)"
    assert not any(ccdf in c.proto.spec for c in at.get("vega_lite_chart"))
    at.selectbox(key="trace").select("conv").run()
    assert not at.warning
    assert any(ccdf in c.proto.spec for c in at.get("vega_lite_chart"))
