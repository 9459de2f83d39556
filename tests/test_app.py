"""Every dashboard page under Streamlit's AppTest on the shared data: no exception, the
expected widgets, figures and downloads; ingest from the Home page."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "app"
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


def test_traces_page(app_db, use_db):
    use_db(app_db)
    at = run("pages/1_Traces.py")
    assert [t.label for t in at.tabs] == ["Arrivals", "Lengths", "Sessions & prefix reuse",
                                          "Failures"]
    assert len(at.image) >= 4  # rate, inter-arrival fit, lengths, request->response
    labels = {b.label for b in at.get("download_button")}
    assert {"CSV", "PNG"} <= labels
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
    assert any(b.label == "PNG" for b in at.get("download_button"))
    assert metric(at, "unique_blocks") != "–"


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
    assert len(at.image) >= 2 and len(at.dataframe) >= 2
    at.selectbox(key="trace").select("helios_earth").run()
    assert_clean(at)
    assert at.selectbox(key="series_metric").options
    assert len(at.image) >= 1


def test_vm_noise_page(app_db, use_db):
    use_db(app_db)
    at = run("pages/3_VM_noise.py")
    assert len(at.image) == 2 and len(at.dataframe) >= 2
    assert at.selectbox(key="vm_test").options


def test_every_page_is_tested():
    pages = sorted(p.name for p in (APP / "pages").glob("*.py"))
    assert pages == ["1_Traces.py", "2_Cluster.py", "3_VM_noise.py"], (
        "a new page needs its AppTest here")


os.environ.setdefault("MPLBACKEND", "Agg")
