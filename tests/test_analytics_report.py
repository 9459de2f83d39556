"""Reports for each trace kind (LLM, cluster, VM): self-contained HTML + summary.json, opened
in headless Chromium (no console errors, figures present), plus the characterize CLI."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from servecast.analytics import cluster, vm_noise
from servecast.analytics.report import write_report

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

VM_SUBSET = "vm/azure_vm_noise/test_suite=PostgreSQL"
KINDS = {  # trace -> (adapter, path, minimum number of figures)
    "azure_conv": ("azure-llm", "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", 4),
    "alibaba_gpu_v2023": ("alibaba-gpu-v2023", "cluster/alibaba_gpu_v2023", 3),
    "vm_postgres": ("azure-vm-noise", VM_SUBSET, 3),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    from servecast.store import Store

    s = Store(tmp_path_factory.mktemp("rep") / "rep.duckdb")
    for trace, (adapter, rel, _) in KINDS.items():
        s.ingest(adapter, [data / rel], trace=trace)
    s.ingest("philly-runtime", [data / "cluster/philly/philly_runtime.csv"], trace="philly")
    yield s
    s.close()


@pytest.fixture(scope="module")
def reports(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    return {t: write_report(store, t, out / t) for t in KINDS}


IMG = re.compile(r'<img class="figure" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.mark.parametrize("trace", list(KINDS))
def test_report_is_self_contained(reports, trace):
    html = reports[trace].read_text()
    pngs = IMG.findall(html)
    assert len(pngs) >= KINDS[trace][2]
    for p in pngs:
        assert base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html and "<script" not in html
    summary = json.loads((reports[trace].parent / "summary.json").read_text())
    assert summary["trace"] == trace and summary["kind"] in ("llm", "cluster", "vm")


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium not installed (`make browser`)")
    return exe


def _run(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("trace", list(KINDS))
def test_report_renders_in_headless_chromium(reports, trace, tmp_path):
    exe = _chromium()
    url = reports[trace].resolve().as_uri()
    dom = _run(exe, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'<img class="figure"', dom.stdout)) >= KINDS[trace][2]
    assert not re.search(r"Uncaught|CONSOLE\(\d+\)|console.*error", dom.stderr, re.I)
    shot = tmp_path / "shot.png"
    res = _run(exe, tmp_path, f"--screenshot={shot}", "--window-size=1100,1600", url)
    assert res.returncode == 0 and shot.stat().st_size > 10_000
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.std() > 0.05  # not a blank page


def test_cluster_durations_and_nodes_match_pandas(store, data):
    raw = pd.read_csv(data / "cluster/philly/philly_runtime.csv")["runtime"].to_numpy()
    q = cluster.duration_cdf(store, "philly")
    for r in q.iter_rows(named=True):
        assert r["value"] == pytest.approx(np.quantile(raw, r["q"]), rel=1e-9)
    inv = cluster.node_inventory(store, "alibaba_gpu_v2023")
    for name in ("all_node", "gpu_node"):
        nodes = pd.read_csv(data / f"cluster/alibaba_gpu_v2023/openb_node_list_{name}.csv")
        mine = inv.filter(inv["inventory"].str.contains(name))
        assert mine["nodes"].sum() == len(nodes)
        assert mine["gpus"].sum() == nodes["gpu"].sum()


def test_vm_variability_matches_polars_groupby(store):
    import polars as pl

    rows = store.rows("vm_postgres").pl()
    keys = list(vm_noise.GROUP)
    ref = rows.group_by(keys).agg(
        (pl.col("value").std(ddof=0) / pl.col("value").mean()).alias("cv_ref"))
    ours = vm_noise.variability(store, "vm_postgres").join(ref, on=keys)
    assert ours.height == ref.height > 0
    assert np.allclose(ours["cv"].to_numpy(), ours["cv_ref"].to_numpy(), rtol=1e-9)


def test_characterize_cli_prints_json(store, data, tmp_path, capsys):
    from servecast.cli import main
    from servecast.store import Store

    db = tmp_path / "cli.duckdb"
    with Store(db) as s:
        s.ingest("azure-llm", [data / KINDS["azure_conv"][1]], trace="azure_conv")
    assert main(["characterize", "azure_conv", "--json", "--db", str(db)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["lengths"]["output_bimodality"]["bimodal"] is True
    assert main(["report", "azure_conv", "--out", str(tmp_path / "r"), "--db", str(db)]) == 0
    assert (tmp_path / "r" / "azure_conv.html").exists()
    assert main(["characterize", "no_such_trace", "--db", str(db)]) == 2
