"""Workload generator: calibration against the Azure conversation trace, rate scaling,
ServeGen-style windows and round trips through the adapters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from servecast.analytics import exports, synth
from servecast.errors import DataFileError

CONV = "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    from servecast.store import Store

    s = Store(tmp_path_factory.mktemp("syn") / "syn.duckdb")
    s.ingest("azure-llm", [data / CONV], trace="azure_conv")
    s.ingest("mooncake", [data / "llm/mooncake"], trace="mooncake")
    yield s
    s.close()


@pytest.fixture(scope="module")
def raw(data):
    df = pd.read_csv(data / CONV)
    t = np.sort(pd.to_datetime(df["TIMESTAMP"]).astype("int64").to_numpy() / 1e9)
    return df, t - t[0]


@pytest.fixture(scope="module")
def model(store):
    return synth.fit_workload(store, "azure_conv", window_s=600)


def cv(t: np.ndarray) -> float:
    g = np.diff(t)
    return g.std() / g.mean()


def test_rate_scale_1_matches_source(model, raw):
    df, t = raw
    span = t[-1]
    out = synth.synthesize(model, span, rate_scale=1.0, seed=3)
    assert out.height / span == pytest.approx(len(t) / span, rel=0.05)
    assert cv(out["arrival_s"].to_numpy()) == pytest.approx(cv(t), rel=0.10)
    assert stats.ks_2samp(out["prompt_tokens"], df["ContextTokens"]).statistic <= 0.05
    assert stats.ks_2samp(out["output_tokens"], df["GeneratedTokens"]).statistic <= 0.05
    # the joint dependence survives: median output of long prompts (>= 2048) stays low
    src_long = df.loc[df["ContextTokens"] >= 2048, "GeneratedTokens"].median()
    syn_long = out.filter(out["prompt_tokens"] >= 2048)["output_tokens"].median()
    assert syn_long == pytest.approx(src_long, rel=0.25)


def test_rate_scale_2_doubles_rate_with_same_cv(model, raw):
    _, t = raw
    span = t[-1]
    one = synth.synthesize(model, span, rate_scale=1.0, seed=5)
    two = synth.synthesize(model, span, rate_scale=2.0, seed=5)
    assert two.height / one.height == pytest.approx(2.0, rel=0.05)
    assert two.height / (2 * len(t)) == pytest.approx(1.0, rel=0.05)
    assert cv(two["arrival_s"].to_numpy()) == pytest.approx(cv(t), rel=0.10)


def test_servegen_windows_and_model_roundtrip(model, tmp_path):
    win = tmp_path / "windows.csv"
    win.write_text("start_s,rate,cv,dist\n0,2.0,1.0,gamma\n300,8.0,3.0,weibull\n")
    model.windows = synth.read_windows(win)
    assert [w.duration_s for w in model.windows] == [300.0, 600.0]
    out = synth.synthesize(model, 900, seed=1)["arrival_s"].to_numpy()
    first, second = out[out < 300], out[out >= 300]
    assert first.size / 300 == pytest.approx(2.0, rel=0.15)
    assert second.size / 600 == pytest.approx(8.0, rel=0.25)
    assert cv(first) == pytest.approx(1.0, rel=0.2) and cv(second) > 2.0
    path = model.save(tmp_path / "m.json")
    again = synth.WorkloadModel.load(path)
    assert again.windows == model.windows and again.prompt_quantiles == model.prompt_quantiles
    bad = tmp_path / "bad.csv"
    bad.write_text("start_s,cv\n0,1\n")
    with pytest.raises(DataFileError, match="missing rate"):
        synth.read_windows(bad)


def test_outputs_ingest_back_through_the_adapters(store, model, tmp_path):
    from servecast.store import Store

    df = synth.synthesize(model, 300, seed=2)
    back = Store(tmp_path / "back.duckdb")
    csv = exports.write_requests(df, "burstgpt", tmp_path / "syn.csv")
    r = back.ingest("burstgpt", [csv], trace="syn_burst")
    assert (r.rows, r.rejected) == (df.height, 0)
    mc_model = synth.fit_workload(store, "mooncake")
    mdf = synth.synthesize(mc_model, 300, seed=2, with_prefixes=True)
    jl = exports.write_requests(mdf, "mooncake", tmp_path / "syn.jsonl")
    r = back.ingest("mooncake", [jl], trace="syn_mc")
    assert (r.rows, r.rejected) == (mdf.height, 0)
    from servecast.analytics.prefix_cache import prefix_reuse

    src, syn = prefix_reuse(store, "mooncake"), prefix_reuse(back, "syn_mc")
    assert syn["reuse_share"] > 0.1 and src["reuse_share"] > 0.1
    back.close()


def test_cli_synth(data, tmp_path):
    from servecast.cli import main
    from servecast.store import Store

    db = tmp_path / "cli.duckdb"
    with Store(db) as s:
        s.ingest("azure-llm", [data / CONV], trace="azure_conv")
    out = tmp_path / "s.csv"
    code = main(["synth", "--from", "azure_conv", "--rate-scale", "2", "--duration", "120",
                 "--format", "burstgpt", "--out", str(out), "--db", str(db)])
    assert code == 0
    df = pd.read_csv(out)
    assert list(df.columns)[:2] == ["Timestamp", "Model"] and df["Timestamp"].max() < 120
    assert main(["synth", "--from", "azure_conv", "--format", "parquet", "--out", str(out),
                 "--db", str(db)]) == 2
