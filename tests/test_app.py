"""Every dashboard page under Streamlit's AppTest on the shared data: no exception, the
expected widgets, interactive charts (Vega-Lite with data, tooltips, zoom and legend filters)
and downloads; ingest from the Home page."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

APP = Path(__file__).resolve().parent.parent / "app"
AZURE_CODE = "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv"
TIMEOUT = 600  # s per script run: the machine is shared; a quiet one needs a few seconds


@pytest.fixture(scope="module")
def app_db(shared_store, tmp_path_factory):
    """A copy of the shared store: the app opens it read-only while the session fixture
    still holds the original open for writing (DuckDB allows one writer per file)."""
    shared_store.con.execute("CHECKPOINT")
    copy = tmp_path_factory.mktemp("app") / "shared.duckdb"
    shutil.copyfile(shared_store.path, copy)
    return copy


@pytest.fixture
def use_db(monkeypatch):
    def use(path: Path) -> None:
        monkeypatch.setenv("SERVECAST_DB", str(path))
    return use


def run(page: str) -> AppTest:
    at = AppTest.from_file(str(APP / page), default_timeout=TIMEOUT).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at: AppTest) -> dict[str, dict]:
    """The page's Vega-Lite charts by title (their first title, top-down) -> spec, after
    checking the contract of every chart: no matplotlib image, data rows in the Arrow data sets
    Streamlit ships next to the spec, a tooltip on every mark, and zoom/pan (a `scales`
    binding) on charts with a continuous (quantitative or temporal) axis."""
    assert not at.image, "a static image where an interactive chart belongs"
    out = {}
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        title = _titles(spec)[0]
        rows = [pa.ipc.open_stream(d.data.data).read_all().num_rows for d in el.proto.datasets]
        assert rows and max(rows) > 0, f"{title}: no data"
        for unit in _units(spec):
            assert "tooltip" in unit["encoding"] or unit["mark"].get("tooltip"), (
                f"{title}: a {unit['mark']} mark without tooltip")
        continuous = any(e.get("type") in ("quantitative", "temporal")
                         for u in _units(spec) for k, e in u["encoding"].items() if k in "xy")
        zooms = any(p.get("bind") == "scales" for ps in _walk(spec, "params") for p in ps)
        assert zooms or not continuous or "facet" in spec, f"{title}: no zoom"
        out[title] = spec
    return out


def legend_filters(spec: dict) -> bool:
    """Whether the chart has a selection bound to its legend."""
    return any(p.get("bind") == "legend" for ps in _walk(spec, "params") for p in ps)


def _walk(spec, key: str) -> list:
    """Every value of `key` in the nested spec."""
    if isinstance(spec, dict):
        return ([spec[key]] if key in spec else []) + [v for x in spec.values()
                                                        for v in _walk(x, key)]
    if isinstance(spec, list):
        return [v for x in spec for v in _walk(x, key)]
    return []


def _titles(spec: dict) -> list[str]:
    return [t if isinstance(t, str) else t.get("text") for t in _walk(spec, "title")
            if t and (isinstance(t, str) or isinstance(t.get("text"), str))]


def _units(spec: dict) -> list[dict]:
    """The unit specs (a mark with its encoding, inherited encodings merged)."""
    if isinstance(spec, dict):
        subs = [s for k in ("layer", "hconcat", "vconcat", "concat") for s in spec.get(k, [])]
        subs += [spec["spec"]] if isinstance(spec.get("spec"), dict) else []
        if "mark" in spec:
            mark = spec["mark"] if isinstance(spec["mark"], dict) else {"type": spec["mark"]}
            return [{"mark": mark, "encoding": spec.get("encoding", {})}]
        return [{**u, "encoding": {**spec.get("encoding", {}), **u["encoding"]}}
                for s in subs for u in _units(s)]
    return []


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_home_shows_store_overview(app_db, use_db, shared_store):
    use_db(app_db)
    at = run("Home.py")
    traces = shared_store.traces()
    assert metric(at, "traces") == f"{traces['trace'].n_unique():,}"
    assert metric(at, "rows") == f"{int(traces['rows'].sum()):,}"
    assert len(at.dataframe) >= 1
    assert at.selectbox(key="ingest_source").options  # adapters to pick from
    assert at.text_input(key="ingest_path") is not None
    assert len(at.get("file_uploader")) == 1
    assert any(b.label == "CSV" for b in at.get("download_button"))


def test_home_ingests_a_file_and_counts_rejected_rows(tmp_path, use_db, data):
    db = tmp_path / "new.duckdb"
    use_db(db)
    at = run("Home.py")
    assert any("no store here" in w.value for w in at.warning)
    # a small BurstGPT-format file with one unparsable row (known answer: 2 rows, 1 rejected)
    src = (data / "llm/burstgpt").glob("*.csv")
    header = next(iter(src)).read_text().splitlines()[0]
    bad = tmp_path / "mini_burstgpt.csv"
    bad.write_text(f"{header}\n5,ChatGPT,100,20,120,Conversation log\n"
                   "6,ChatGPT,lots,20,120,Conversation log\n"
                   "9,GPT-4,300,40,340,API log\n")
    at.selectbox(key="ingest_source").select("burstgpt")
    at.text_input(key="ingest_path").input(str(bad)).run()
    at.button(key="ingest_path_go").click().run()
    assert_clean(at)
    assert any("ingested 2 rows" in s.value and "1 rejected" in s.value for s in at.success)
    assert metric(at, "rows") == "2"
    assert metric(at, "rejected rows") == "1"



def mini_burstgpt(data: Path) -> str:
    """A small BurstGPT-format file: 2 good rows, 1 bad (known answer)."""
    header = next(iter((data / "llm/burstgpt").glob("*.csv"))).read_text().splitlines()[0]
    return (f"{header}\n5,ChatGPT,100,20,120,Conversation log\n"
            "6,ChatGPT,lots,20,120,Conversation log\n9,GPT-4,300,40,340,API log\n")


@pytest.fixture
def upload_tmp(tmp_path, monkeypatch):
    """The temporary-file root the dashboard saves uploads under (empty at start)."""
    import tempfile

    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_home_upload_is_deleted_after_ingest_success_or_failure(tmp_path, use_db, data,
                                                                  upload_tmp):
    use_db(tmp_path / "up.duckdb")
    at = run("Home.py")
    at.selectbox(key="ingest_source").select("burstgpt")
    at.file_uploader(key="ingest_upload").set_value(
        ("mini.csv", mini_burstgpt(data).encode(), "text/csv")).run()
    at.button(key="ingest_upload_go").click().run()
    assert_clean(at)
    assert any("ingested 2 rows into mini" in s.value for s in at.success)
    assert list(upload_tmp.iterdir()) == []
    # a failing ingest (a header of another format) leaves nothing behind either
    at.selectbox(key="ingest_source").select("azure-llm")
    at.file_uploader(key="ingest_upload").set_value(
        ("wrong.csv", mini_burstgpt(data).encode(), "text/csv")).run()
    at.button(key="ingest_upload_go").click().run()
    assert any("header does not match" in e.value for e in at.error)
    assert list(upload_tmp.iterdir()) == []


def test_home_path_error_does_not_echo_the_file(tmp_path, use_db):
    use_db(tmp_path / "echo.duckdb")
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nsecond line\n")
    at = run("Home.py")
    at.selectbox(key="ingest_source").select("azure-llm")
    at.text_input(key="ingest_path").input(str(secret)).run()
    at.button(key="ingest_path_go").click().run()
    [err] = at.error
    assert "header does not match" in err.value and "expected columns" in err.value
    assert "1 column(s), not shown" in err.value
    assert "root" not in err.value.replace(str(tmp_path), "")


def test_cli_ingest_succeeds_while_the_dashboard_shows_the_store(tmp_path, use_db, data):
    """The dashboard holds no lock between reruns; the next rerun shows the new rows."""
    import subprocess
    import sys

    db = tmp_path / "shared.duckdb"
    (tmp_path / "mini.csv").write_text(mini_burstgpt(data))
    use_db(db)
    at = run("Home.py")
    at.selectbox(key="ingest_source").select("burstgpt")
    at.text_input(key="ingest_path").input(str(tmp_path / "mini.csv")).run()
    at.button(key="ingest_path_go").click().run()
    assert metric(at, "rows") == "2"
    cli = Path(sys.executable).parent / "servecast"
    r = subprocess.run([str(cli), "ingest", "azure-llm", str(data / AZURE_CODE), "--db", str(db)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    at.run()
    assert_clean(at)
    assert metric(at, "rows") == f"{2 + 8819:,}"


def test_home_says_when_another_process_writes(tmp_path, use_db, data):
    import subprocess
    import sys

    db = tmp_path / "locked.duckdb"
    (tmp_path / "mini.csv").write_text(mini_burstgpt(data))
    hold = ("import sys; from servecast.store import Store; s = Store(sys.argv[1]); "
            "print('open', flush=True); sys.stdin.read()")
    writer = subprocess.Popen([sys.executable, "-c", hold, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        use_db(db)
        at = AppTest.from_file(str(APP / "Home.py"), default_timeout=TIMEOUT).run()
        assert not at.exception
        assert any("open for writing by another process" in w.value for w in at.warning)
        at.selectbox(key="ingest_source").select("burstgpt")
        at.text_input(key="ingest_path").input(str(tmp_path / "mini.csv")).run()
        at.button(key="ingest_path_go").click().run()
        assert any("Not ingested: another process is writing" in e.value for e in at.error)
    finally:
        writer.communicate("")
    at.run()  # the writer is gone: the page reads the store again
    assert_clean(at)
    assert metric(at, "rows") == "0"

def test_traces_page(app_db, use_db):
    use_db(app_db)
    at = run("pages/1_Traces.py")
    assert [t.label for t in at.tabs] == ["Arrivals", "Lengths", "Sessions & prefix reuse",
                                          "Failures"]
    shown = charts(at)
    assert {"Request rate (1 min bins)", "Inter-arrival time: empirical vs fitted (CCDF)",
            "Prompt and output length (log bins)",
            "Output length given prompt length (p10 / p50 / p90)"} <= set(shown)
    lengths = shown["Prompt and output length (log bins)"]
    assert lengths["encoding"]["x"]["scale"]["type"] == "log"  # as the static figure
    assert legend_filters(lengths)  # prompt / output
    assert legend_filters(shown["Inter-arrival time: empirical vs fitted (CCDF)"])
    labels = {b.label for b in at.get("download_button")}
    assert {"CSV", "Vega-Lite"} <= labels
    requests = metric(at, "requests")
    # filter by arrival window: fewer requests
    slider = at.sidebar.slider[0]
    lo, hi = slider.value
    slider.set_value((lo, lo + (hi - lo) / 4)).run()
    assert_clean(at)
    assert int(metric(at, "requests").replace(",", "")) < int(requests.replace(",", ""))
    # a trace with prefix hashes shows the prefix-cache figure
    at.selectbox(key="trace").select("mooncake_conversation").run()
    assert_clean(at)
    assert "KV prefix cache: LRU hit ratio vs capacity" in charts(at)
    assert metric(at, "unique_blocks") != "–"
    # a trace with session ids shows turns and prompt growth (two zoomable panels)
    at.selectbox(key="trace").select("sharegpt").run()
    assert_clean(at)
    sessions = charts(at)["Turns per session"]
    assert len(sessions["hconcat"]) == 2 and legend_filters(sessions)


def test_traces_page_model_filter(app_db, use_db):
    use_db(app_db)
    at = AppTest.from_file(str(APP / "pages/1_Traces.py"), default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key="trace").select("burstgpt_head54").run()
    assert_clean(at)
    assert metric(at, "requests") == "54"
    models = at.multiselect(key="f_models")
    assert "ChatGPT" in models.options
    models.select("GPT-4").run()
    assert_clean(at)
    assert 0 < int(metric(at, "requests")) < 54


def test_cluster_page(app_db, use_db):
    use_db(app_db)
    at = run("pages/2_Cluster.py")
    assert {"Job duration (CDF)", "Jobs by final status"} <= set(charts(at))
    assert len(at.dataframe) >= 2
    at.selectbox(key="trace").select("helios_earth").run()
    assert_clean(at)
    metric_ = at.selectbox(key="series_metric")
    assert metric_.options
    series = charts(at)[f"{metric_.value} (mean per 1 hour)"]
    assert series["encoding"]["x"]["type"] == "temporal"


def test_vm_noise_page(app_db, use_db, no_models):
    use_db(app_db)
    at = run("pages/3_VM_noise.py")
    shown = charts(at)
    assert len(shown) == 2 and len(at.dataframe) >= 2
    noise = shown["Run-to-run variability per benchmark (p1 / p99 relative to median)"]
    assert noise["encoding"]["y"]["scale"]["type"] == "log" and legend_filters(noise)
    test = at.selectbox(key="vm_test")
    assert test.options and f"{test.value}: daily median" in shown
    assert "No interference model" in at.info[0].value


def test_vm_noise_page_shows_the_saved_interference_model(app_db, use_db, no_models,
                                                          shared_store):
    from servecast.predictors.interference.evaluate import compare
    from servecast.predictors.interference.settings import PRESET
    from servecast.predictors.interference.tasks import fingerprint_task

    task = fingerprint_task(shared_store, max_instances=300, until="2023-08-15")
    table = compare(task, ("gbm",), PRESET.fast, out=no_models / "runs", log=lambda s: None)
    shutil.copytree(no_models / "runs" / "fingerprint" / "gbm",
                    no_models / "models" / "interference")
    use_db(app_db)
    at = run("pages/3_VM_noise.py")
    assert not at.info
    shown = float(metric(at, "test MAE (pp of perf)"))
    assert shown == pytest.approx(table.filter(table["group"] == "all")["mae_pp"][0], rel=1e-3)
    assert metric(at, "task") == "fingerprint"
    assert len(at.dataframe) >= 3  # + the per-SKU test table


@pytest.fixture
def no_models(monkeypatch, tmp_path):
    """An empty demo output folder (no saved models or MoE runs); returns it."""
    out = tmp_path / "out"
    monkeypatch.setenv("SERVECAST_OUT", str(out))
    return out


def test_output_length_page_trains_and_simulates(app_db, use_db, no_models):
    use_db(app_db)
    at = run("pages/4_Output_length.py")
    assert any("Train & evaluate" in i.value for i in at.info)
    assert not charts(at)  # nothing is trained before the click
    assert at.selectbox(key="trace").value == "azure_conv"  # preselected over the first trace
    at.button(key="ol_train").click().run()
    assert_clean(at)
    assert metric(at, "test requests") != "–"
    assert 0 <= float(metric(at, "coverage p90")) <= 1
    shown = charts(at)
    assert "Calibration: share of requests at or below each predicted quantile" in shown
    assert "Predicted vs actual" in shown  # and the error histogram beside it
    assert any(t.startswith("What-if at load 0.90") for t in shown)
    assert all(legend_filters(c) for c in shown.values())
    assert len(at.dataframe) == 2  # metrics vs baselines, what-if per policy
    assert at.multiselect(key="wi_policies").value == ["fcfs", "sjf_pred", "sjf_p90",
                                                       "sjf_oracle", "sjf_pred_aging", "kv_p90",
                                                       "kv_worst"]
    capacity = metric(at, "capacity (req/s)")
    arrivals = metric(at, "arrivals (req/s)")
    at.slider(key="wi_load").set_value(1.2).run()  # the model stays trained: no new click
    assert_clean(at)
    assert metric(at, "capacity (req/s)") == capacity
    assert float(metric(at, "arrivals (req/s)")) > float(arrivals)
    at.multiselect(key="wi_policies").set_value(["fcfs", "kv_p90"]).run()
    assert_clean(at)
    assert at.dataframe[1].value.shape[0] == 2
    # a trace without arrival times: evaluation works, the what-if explains why it cannot
    at.selectbox(key="trace").select("lengths_arxiv").run()
    at.button(key="ol_train").click().run()
    assert_clean(at)
    assert len(charts(at)) == 2
    assert any("no arrival times" in i.value for i in at.info)


def test_gpu_kernels_page_roofline_without_model(app_db, use_db, no_models):
    use_db(app_db)
    at = run("pages/5_GPU_kernels.py")
    assert any("No trained kernel-latency model" in i.value for i in at.info)
    assert at.button(key="kl_train") is not None
    shown = charts(at)
    assert len(shown) == 2  # predicted vs measured, per-device estimates
    assert all(legend_filters(c) for c in shown.values())
    assert float(metric(at, "MdAPE roofline (%)")) > 0
    assert metric(at, "kernels") != "0"
    unseen = at.selectbox(key="kl_spec_device")
    assert unseen.value == "NVIDIA H100 80GB HBM3"  # no measurements, newest first
    h100 = float(metric(at, f"roofline on {unseen.value} (ms)"))
    # a hand-entered spec: half the H100's bandwidth and FLOPs -> a slower estimate
    at.radio(key="kl_spec_src").set_value("enter numbers").run()
    assert_clean(at)
    at.number_input(key="kl_spec_Mem_Bw").set_value(1715.0)
    at.number_input(key="kl_spec_SingleFLOPs").set_value(33454.0).run()
    assert_clean(at)
    assert float(metric(at, "roofline on custom (ms)")) > h100
    at.selectbox(key="kl_est_op").select("softmax").run()
    assert_clean(at)
    assert at.number_input(key="kl_shape_H").value == 4096
    # an fp16 GEMM of an LLM layer: runs at the optional TensorFLOPs peak (empty: 16 x fp32)
    at.selectbox(key="kl_est_op").select("vidur.mlp_up_proj").run()
    assert_clean(at)
    tensor = at.number_input(key="kl_spec_TensorFLOPs")
    assert tensor.value is None and "16 x SingleFLOPs" in tensor.placeholder
    default = float(metric(at, "roofline on custom (ms)"))
    tensor.set_value(33454.0 * 4).run()  # an A40-like tensor core: 4x below the default
    assert_clean(at)
    # compute-bound: slower, by at most the peak ratio (the memory time and launch floor stay)
    assert 2.5 * default < float(metric(at, "roofline on custom (ms)")) <= 4 * default
    assert '"TensorFLOPs": 133816.0' in at.code[0].value  # the spec JSON carries it


def test_gpu_kernels_page_with_saved_model(app_db, use_db, no_models, shared_store):
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor
    from servecast.predictors.kernel_latency.train import kernel_training_data

    frame, devices = kernel_training_data(shared_store, vidur=False)
    KernelLatencyPredictor(devices, epochs=1, max_rows=5000).fit(frame).save(
        no_models / "models" / "kernel_latency")
    use_db(app_db)
    at = run("pages/5_GPU_kernels.py")
    assert not at.info
    assert float(metric(at, "MdAPE learned (%)")) > 0
    assert float(metric(at, "learned on NVIDIA H100 80GB HBM3 (ms)")) > 0


def test_moe_page(app_db, use_db, no_models):
    use_db(app_db)
    at = run("pages/6_MoE.py")
    assert set(at.selectbox(key="moe_model").options) == {"mistral", "olmoe"}
    assert len(charts(at)) == 2  # load heatmap, imbalance
    assert len(at.dataframe) == 3  # imbalance, transfer summary, gamma per domain
    assert any("No small-MoE run" in i.value for i in at.info)
    assert at.button(key="moe_tiny") is not None
    at.selectbox(key="moe_model").select("olmoe").run()
    at.selectbox(key="moe_assign").select("topk").run()
    assert_clean(at)
    imbalance = charts(at)["olmoe (topk)"]
    assert legend_filters(imbalance)  # one bar per layer
    assert at.dataframe[0].value.shape[0] == 18  # 6 domains x 3 layers


def test_moe_page_shows_a_saved_run_trajectory(app_db, use_db, no_models):
    """A small-MoE run in the demo folder: the gamma_eff trajectory chart, one panel per
    layer, its estimates filterable from the legend."""
    from servecast.predictors.moe_congestion.run import RunConfig, train_small_moe

    cfg = RunConfig(alpha=0.01, steps=6, snapshots=2, d=16, d_ff=32, heads=2, vocab=256,
                    context=16, batch_size=8, train_conversations=30, eval_conversations=10,
                    eval_windows=24, batch_windows=2, n_experts=4)
    train_small_moe(no_models / "moe" / "run", cfg)
    use_db(app_db)
    at = run("pages/6_MoE.py")
    assert not any("No small-MoE run" in i.value for i in at.info)
    assert metric(at, "checkpoints") == "3" and metric(at, "layers") == "2"
    traj = charts(at)["gamma_eff over training"]
    assert traj["facet"]["column"]["field"] == "layer" and legend_filters(traj)


def test_every_page_is_tested():
    pages = sorted(p.name for p in (APP / "pages").glob("*.py"))
    assert pages == ["1_Traces.py", "2_Cluster.py", "3_VM_noise.py", "4_Output_length.py",
                     "5_GPU_kernels.py", "6_MoE.py", "7_Latency.py", "8_Capacity.py"], \
        "a new page needs its AppTest here (7_Latency: tests/test_analytics_latency.py, " \
        "8_Capacity: tests/test_capacity.py)"


os.environ.setdefault("MPLBACKEND", "Agg")
