"""Latency characterization: TTFT / TPOT / e2e percentiles over time and against load, SLO
attainment and goodput, in `characterize`, the CLI and the report.

Two stores with latency columns, both ingested through the user-log adapter: the gateway
log fixture (tests/data/gateway: 60 requests with status, errors, TTFT, queueing, e2e) and
the Azure code trace's real arrivals and lengths served by the continuous-batching
simulator (an A100-class instance: bursts of the real trace queue up, so latency grows with
load), written as a latency log."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from servecast.analytics import interactive, latency, plots
from servecast.analytics.characterize import characterize, characterize_llm, latency_window
from servecast.analytics.report import write_report
from servecast.cli import main
from servecast.datasets.user_log import Mapping, UserLog
from servecast.errors import InvalidInputError
from servecast.simulator.engine import ServingConfig, simulate
from servecast.store import Store

pytestmark = pytest.mark.slow  # a simulated hour of the Azure code trace (> 5 s)

CODE = "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv"
GATEWAY = Path(__file__).parent / "data" / "gateway"


@pytest.fixture(scope="module")
def served(data, tmp_path_factory) -> pd.DataFrame:
    """Azure code's arrivals and lengths served by the simulator: the latency log (s)."""
    src = pd.read_csv(data / CODE)
    t = pd.to_datetime(src["TIMESTAMP"]).astype("int64").to_numpy() / 1e9
    t -= t.min()
    p, o = src["ContextTokens"].to_numpy(), src["GeneratedTokens"].to_numpy()
    r = simulate(t, p, o, config=ServingConfig(iter_token_ms=0.04, iter_base_ms=6.0))
    e2e, ttft = r["jct_s"], r["ttft_s"]
    tpot = np.where(o > 1, (e2e - ttft) / np.maximum(o - 1, 1), np.nan)
    return pd.DataFrame({"arrival_s": t, "prompt_tokens": p, "completion_tokens": o,
                         "ttft_ms": ttft * 1000, "tpot_ms": tpot * 1000, "e2e_ms": e2e * 1000})


@pytest.fixture(scope="module")
def db(served, data, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lat")
    served.to_csv(tmp / "served.csv", index=False)
    path = tmp / "lat.duckdb"
    with Store(path) as s:
        m = Mapping.parse(["arrival_s=arrival_s", "prompt_tokens=prompt_tokens",
                           "output_tokens=completion_tokens", "ttft_s=ttft_ms",
                           "tpot_s=tpot_ms", "elapsed_s=e2e_ms"], units=["arrival_s=s"])
        assert s.ingest(UserLog(m), [tmp / "served.csv"], trace="served").rows == len(served)
        gw = Mapping.parse(file=GATEWAY / "gateway.toml")
        s.ingest(UserLog(gw), [GATEWAY / "gateway.jsonl"], trace="gw")
        s.ingest("azure-llm", [data / CODE], trace="code")
    return path


@pytest.fixture(scope="module")
def store(db):
    s = Store(db, read_only=True)
    yield s
    s.close()


def concurrency(df: pd.DataFrame) -> np.ndarray:
    """Requests in flight at each arrival (brute force)."""
    a, f = df["arrival_s"].to_numpy(), (df["arrival_s"] + df["e2e_ms"] / 1000).to_numpy()
    return np.array([((a < x) & (f > x)).sum() + ((a == x) & (np.arange(a.size) < i)
                                                    & (f > x)).sum()
                     for i, x in enumerate(a)])


def test_percentiles_overall_and_per_window(store, served):
    assert latency.latency_metrics(store, "served") == ["ttft_s", "tpot_s", "elapsed_s"]
    assert latency.latency_metrics(store, "code") == []
    overall = latency.latency_percentiles(store, "served")
    ttft = overall.filter(pl.col("metric") == "ttft_s").row(0, named=True)
    want = np.percentile(served["ttft_ms"] / 1000, [50, 90, 99])
    assert [ttft["p50"], ttft["p90"], ttft["p99"]] == pytest.approx(want, rel=1e-6)
    win = latency.latency_percentiles(store, "served", bin_s=60.0, metrics=["elapsed_s"])
    assert set(win["metric"]) == {"elapsed_s"} and win["n"].sum() == len(served)
    first = served[served["arrival_s"] < 60]["e2e_ms"] / 1000
    assert win.row(0, named=True)["p90"] == pytest.approx(np.percentile(first, 90))
    with pytest.raises(InvalidInputError, match="unknown latency metric"):
        latency.latency_percentiles(store, "served", metrics=["ttlt_s"])


def test_latency_grows_with_concurrency(store, served):
    got = latency.latency_vs_load(store, "served", load="concurrency", bins=10,
                                  metrics=["ttft_s"])
    conc = concurrency(served)
    order = np.argsort(conc, kind="stable")
    parts = np.array_split(conc[order], 10)  # equal-count bins, as DuckDB's ntile
    assert got["n"].to_list() == [len(x) for x in parts]
    assert got["load_mean"].to_list() == pytest.approx([x.mean() for x in parts])
    p99 = got["p99"].to_numpy()
    assert p99[-1] > 5 * p99[0]  # the bursts of the real trace queue up
    rate = latency.latency_vs_load(store, "served", "rate", 5, bin_s=60.0)
    assert rate["load_hi"].max() == pytest.approx(
        np.bincount((served["arrival_s"] // 60).astype(int)).max() / 60)
    with pytest.raises(InvalidInputError, match="concurrency or rate"):
        latency.latency_vs_load(store, "served", load="tokens")


def test_slo_attainment_and_goodput_on_the_gateway_log(store):
    rows = [json.loads(x) for x in (GATEWAY / "gateway.jsonl").read_text().splitlines()]
    slo = latency.parse_slo(items=["ttft:300,e2e:20000"])
    assert slo == {"ttft_s": 0.3, "elapsed_s": 20.0}
    got = latency.slo_attainment(store, "gw", slo=slo).row(0, named=True)
    good = [r for r in rows if r["status"] == 200 and r["timings"]["ttft_ms"] is not None
            and r["timings"]["ttft_ms"] <= 300 and r["timings"]["latency_ms"] <= 20000]
    t = np.array([datetime.fromisoformat(r["time"]).timestamp() for r in rows])
    assert got["requests"] == len(rows) and got["good"] == len(good)
    assert got["attainment"] == pytest.approx(len(good) / len(rows))
    assert got["goodput_rps"] == pytest.approx(len(good) / (t.max() - t.min()))
    assert got["goodput_tokens_per_s"] == pytest.approx(
        sum(r["usage"]["completion_tokens"] for r in good) / (t.max() - t.min()))
    per = latency.slo_attainment(store, "gw", slo, bin_s=10.0)
    assert per["requests"].sum() == len(rows) and per["good"].sum() == len(good)
    for bad in (["ttft"], ["ttft:-5"], ["latency:100"], ["ttft:abc"]):
        with pytest.raises(InvalidInputError, match="NAME:MILLISECONDS"):
            latency.parse_slo(bad)
    with pytest.raises(InvalidInputError, match="no tpot_s values"):
        latency.slo_attainment(store, "gw", {"tpot_s": 0.05})


def test_characterize_report_and_cli(store, db, tmp_path, capsys):
    slo = {"ttft_s": 2.0, "tpot_s": 0.05}
    summary = characterize(store, "served", slo=slo)
    lat = summary["latency"]
    assert lat["window_s"] == latency_window(3600.0) == 60.0 and latency_window(86400) == 3600
    assert {r["metric"] for r in lat["vs_concurrency"]} == {"ttft_s", "tpot_s", "elapsed_s"}
    assert 0 < lat["slo"]["overall"]["attainment"] < 1
    assert characterize_llm(store, "gw", sample=1000, slo=None)["latency"]["metrics"] == [
        "ttft_s", "elapsed_s", "queue_s"]
    html = write_report(store, "served", tmp_path / "r", slo=slo).read_text()
    assert "SLO attainment" in html and "Latency against concurrency" in html
    store_path = str(db)
    assert main(["characterize", "served", "--json", "--slo", "ttft:2000", "--slo", "tpot:50",
                 "--db", store_path]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency"]["slo"]["overall"] == pytest.approx(lat["slo"]["overall"])
    assert main(["characterize", "code", "--slo", "ttft:500", "--db", store_path]) == 2
    assert "has no latency columns" in capsys.readouterr().err
    assert main(["characterize", "gw", "--slo", "ttft=500", "--db", store_path]) == 2
    assert "NAME:MILLISECONDS" in capsys.readouterr().err
    assert main(["report", "gw", "--slo", "ttft:300", "--out", str(tmp_path / "g"),
                 "--db", store_path]) == 0


def test_latency_figures(store):
    win = latency.latency_percentiles(store, "served", bin_s=300.0)
    fig = plots.latency_series(windows=win)
    assert len(fig.axes) == 3 and all(len(ax.get_lines()) == 3 for ax in fig.axes)
    groups = latency.latency_vs_load(store, "served", bins=5)
    fig = plots.latency_vs_load(groups=groups, xlabel="in flight")
    assert len(fig.axes[0].get_lines()) == 6  # p50 and p99 per metric
    slo = latency.slo_attainment(store, "served", {"ttft_s": 1.0}, bin_s=300.0)
    fig = plots.slo_series(windows=slo, limits="ttft_s <= 1000 ms")
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == slo.height


def test_interactive_latency_charts(store):
    win = latency.latency_percentiles(store, "served", bin_s=300.0)
    spec = interactive.latency_series(windows=win).to_dict()
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
    groups = latency.latency_vs_load(store, "served", bins=4)
    chart = interactive.latency_vs_load(groups=groups, xlabel="requests in flight")
    assert len(chart.data) == 2 * groups.height  # p50 and p99 per metric and bin
    slo = latency.slo_attainment(store, "served", {"ttft_s": 1.0}, bin_s=300.0)
    assert len(interactive.slo_series(windows=slo, limits="TTFT <= 1000 ms").data) == \
        slo.height


def test_dashboard_latency_page(db, monkeypatch, store):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SERVECAST_DB", str(db))
    page = Path(__file__).resolve().parents[1] / "app" / "pages" / "7_Latency.py"
    at = AppTest.from_file(str(page), default_timeout=600)
    at.run()
    at.selectbox(key="trace").select("served").run()
    assert not at.exception and not at.error
    titles = {json.loads(c.proto.spec)["title"] for c in at.get("vega_lite_chart")}
    assert {"Latency percentiles over time", "Latency against requests in flight at arrival",
            "SLO attainment (TTFT <= 500 ms, TPOT <= 50 ms)"} <= titles
    want = latency.slo_attainment(store, "served", {"ttft_s": 0.5, "tpot_s": 0.05})
    shown = {m.label: m.value for m in at.metric}
    assert float(shown["SLO attainment"]) == pytest.approx(want["attainment"].item(), abs=5e-3)
    at.number_input(key="slo_ttft_s").set_value(5000.0).run()  # a looser TTFT limit
    assert float({m.label: m.value for m in at.metric}["SLO attainment"]) > \
        float(shown["SLO attainment"])
    at.selectbox(key="trace").select("code").run()
    assert not at.exception and "no latency columns" in at.info[0].value


def test_a_real_aiperf_run_is_characterized(tmp_path):
    """AIPerf 0.13.0's own per-request export (tests/data/bench, a run against the loopback
    stub that fails every 5th request), ingested by the aiperf reader."""
    src = Path(__file__).parent / "data" / "bench" / "aiperf_profile_export.jsonl"
    records = [json.loads(x) for x in src.read_text().splitlines()]
    ok = [r["metrics"] for r in records if "time_to_first_token" in r["metrics"]]
    with Store(tmp_path / "a.duckdb") as s:
        s.ingest("aiperf", [src], trace="aiperf")
        summary = characterize(s, "aiperf", slo={"ttft_s": 0.05})
    lat = summary["latency"]
    assert {"ttft_s", "tpot_s", "elapsed_s"} <= set(lat["metrics"])
    ttft = next(r for r in lat["overall"] if r["metric"] == "ttft_s")
    assert ttft["n"] == len(ok)
    assert ttft["p50"] == pytest.approx(
        np.percentile([m["time_to_first_token"]["value"] / 1000 for m in ok], 50))
    good = sum(m["time_to_first_token"]["value"] <= 50 for m in ok)
    assert lat["slo"]["overall"]["good"] == good
    assert lat["slo"]["overall"]["requests"] == len(records)
