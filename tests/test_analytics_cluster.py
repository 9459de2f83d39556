"""Cluster and VM-noise characterization on the shared Alibaba GPU 2023, Philly, Helios and
Azure VM-noise data: every public function and parameter of analytics/cluster.py and
analytics/vm_noise.py, checked against numpy/polars on the canonical rows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from servecast.analytics import cluster, vm_noise
from servecast.errors import UnknownNameError


@pytest.fixture(scope="module")
def store(store_of, vm_sysbench):
    return store_of(("alibaba-gpu-v2023", "cluster/alibaba_gpu_v2023", "gpu23"),
                    ("philly-runtime", "cluster/philly/philly_runtime.csv", "philly"),
                    ("helios", "cluster/helios_earth", "helios"),
                    ("azure-vm-noise", vm_sysbench, "vm"))


def jobs(store, trace: str) -> pl.DataFrame:
    """Canonical job rows with the duration the analytics use."""
    return store.sql("SELECT *, coalesce(duration_s, end_s - start_s) AS d FROM cluster_jobs "
                     "WHERE trace = ?", [trace])


def test_duration_cdf_by_status_matches_numpy_per_status(store):
    got = cluster.duration_cdf(store, "gpu23", by_status=True)
    raw = jobs(store, "gpu23").filter(pl.col("d").is_not_null())
    # Pending pods never started: no duration, so no rows for them
    assert set(got["status"]) == set(raw["status"]) == {"Failed", "Running", "Succeeded"}
    for status, part in got.group_by("status"):
        d = raw.filter(pl.col("status") == status[0])["d"].to_numpy()
        assert part["q"].to_list() == list(cluster.CDF_POINTS)
        np.testing.assert_allclose(part["value"], np.quantile(d, part["q"]), rtol=1e-9)
    # without by_status: one curve over every job; a trace with no status -> "(none)"
    whole = cluster.duration_cdf(store, "gpu23", by_status=False)
    assert whole.columns == ["q", "value"]
    np.testing.assert_allclose(whole["value"], np.quantile(raw["d"].to_numpy(), whole["q"]))
    assert cluster.duration_cdf(store, "philly", by_status=True)["status"].unique().to_list() \
        == ["(none)"]


def test_duration_ecdf_points_and_status_breakdown(store):
    e = cluster.duration_ecdf(store, "philly", points=11)
    assert e.height == 11 and e["cdf"].to_list() == pytest.approx(np.linspace(0, 1, 11))
    d = np.sort(jobs(store, "philly")["d"].to_numpy())
    assert e["value"][0] == d[0] and e["value"][-1] == d[-1]
    assert e["value"].is_sorted()
    b = cluster.status_breakdown(store, "gpu23")
    raw = jobs(store, "gpu23")
    counts = dict(raw.group_by("status").len().iter_rows())
    assert dict(zip(b["status"], b["jobs"], strict=True)) == counts
    assert b["share"].sum() == pytest.approx(1.0)
    run = raw.filter(pl.col("status") == "Running")
    gpu_h = (run["gpu_request"] * run["num_instances"].fill_null(1) * run["d"]).sum() / 3600
    assert b.filter(pl.col("status") == "Running")["gpu_hours"][0] == pytest.approx(gpu_h)


def test_gpu_requests_queueing_and_job_summary(store):
    raw = jobs(store, "gpu23")
    g = cluster.gpu_request_sizes(store, "gpu23")
    assert g["jobs"].sum() == raw["gpu_request"].drop_nulls().len()
    assert g["gpu_request"].is_sorted()
    q = cluster.queueing_delay(store, "gpu23")
    wait = (raw["start_s"] - raw["submit_s"]).drop_nulls().to_numpy()
    np.testing.assert_allclose(q["value"], np.quantile(wait, q["q"]))
    assert q["zero_share"][0] == pytest.approx((wait <= 0).mean())
    s = cluster.job_summary(store, "gpu23")
    assert s["jobs"] == raw.height and s["with_duration"] == raw["d"].drop_nulls().len()
    assert s["duration_p50_s"] == pytest.approx(np.median(raw["d"].drop_nulls().to_numpy()))
    assert s["queue_p99_s"] == pytest.approx(np.quantile(wait, 0.99))


def test_series_stats_values_and_nodes(store):
    st = cluster.series_stats(store, "helios")
    raw = store.sql("SELECT series, metric, ts, value FROM cluster_series WHERE trace = 'helios'")
    one = raw.filter((pl.col("series") == "vc3sl") & (pl.col("metric") == "total_gpu_num"))
    row = st.filter((pl.col("series") == "vc3sl") & (pl.col("metric") == "total_gpu_num"))
    assert row["points"][0] == one.height
    assert row["mean"][0] == pytest.approx(one["value"].mean())
    daily = cluster.series_values(store, "helios", metric="running_gpu_num", every="1 day")
    hourly = cluster.series_values(store, "helios", "running_gpu_num")  # default 1 hour
    assert daily.filter(pl.col("series") == "vc3sl").height == 31  # May 2020
    assert hourly.filter(pl.col("series") == "vc3sl").height == 31 * 24
    assert cluster.series_values(store, "helios", metric="no_such_metric").is_empty()
    nodes = cluster.node_inventory(store, "gpu23")
    raw_nodes = store.sql("SELECT * FROM cluster_nodes WHERE trace = 'gpu23'")
    assert nodes["nodes"].sum() == raw_nodes.height
    assert nodes["gpus"].sum() == raw_nodes["gpus"].sum()


def test_has_rows_and_characterize_cluster_sections(store):
    assert cluster.has_rows(store, "gpu23", table="cluster_nodes")
    assert not cluster.has_rows(store, "philly", "cluster_nodes")
    gpu = cluster.characterize_cluster(store, "gpu23")
    assert {"jobs", "nodes"} <= set(gpu) and "series" not in gpu
    assert gpu["jobs"]["jobs"] == jobs(store, "gpu23").height
    helios = cluster.characterize_cluster(store, "helios")
    assert "series" in helios and "jobs" not in helios
    with pytest.raises(UnknownNameError, match="no_such_trace"):
        cluster.duration_cdf(store, "no_such_trace", by_status=True)


def vm_rows(store) -> pl.DataFrame:
    return store.sql("SELECT * FROM vm_measurements WHERE trace = 'vm'")


def test_vm_variability_and_by_sku_match_polars(store):
    raw = vm_rows(store)
    v = vm_noise.variability(store, "vm")
    assert v["runs"].sum() == raw.height
    top = v.row(0, named=True)
    grp = raw.filter(*(pl.col(k) == top[k] for k in vm_noise.GROUP))["value"].to_numpy()
    assert top["cv"] == pytest.approx(grp.std() / grp.mean())
    assert top["p99_rel"] == pytest.approx(np.quantile(grp, 0.99) / np.median(grp))
    sku = vm_noise.by_sku(store, "vm")
    assert set(sku["vm_sku"]) == set(raw["vm_sku"])
    assert sku["benchmarks"].sum() == v.height


def test_vm_drift_thresholds_and_series(store):
    loose = vm_noise.drift(store, "vm", min_days=0.0, min_runs=2)
    default = vm_noise.drift(store, "vm")
    strict = vm_noise.drift(store, "vm", min_days=10_000.0, min_runs=20)
    assert loose["vms"].sum() >= default["vms"].sum() > 0
    assert strict.is_empty()
    name = vm_rows(store)["test_name"][0]
    daily = vm_noise.vm_series(store, "vm", test_name=name)
    weekly = vm_noise.vm_series(store, "vm", name, every="7 days")
    assert daily["runs"].sum() == weekly["runs"].sum() == \
        vm_rows(store).filter(pl.col("test_name") == name)["start_time"].drop_nulls().len()
    assert weekly.height < daily.height
    summary = vm_noise.characterize_vm(store, "vm")
    assert summary["runs"] == vm_rows(store).height and summary["kind"] == "vm"
