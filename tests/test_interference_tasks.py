"""Azure VM Noise tasks: unit directions, iteration/instance reconstruction, leak-free splits,
and a reduced end-to-end training through the store."""

from __future__ import annotations

import polars as pl
import pytest

from servecast.errors import InvalidInputError
from servecast.predictors.interference.tasks import (
    fingerprint_task,
    temporal_task,
    unit_direction,
)

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

HIGHER = ["MiB_s", "IOPS", "TPS", "Bogo Ops_s", "ops_sec", "GB_sec", "Requests Per Second",
          "Events Per Second", "MiB_sec"]
LOWER = ["msec", "ns", "ms", "us Per Event", "Ns Per Event", "seconds"]


@pytest.fixture(scope="module")
def vm_store(tmp_path_factory, data):
    from servecast.store import Store

    store = Store(tmp_path_factory.mktemp("vm") / "vm.duckdb")
    store.ingest("azure-vm-noise", [data / "vm/azure_vm_noise"], trace="azure_vm_noise")
    yield store
    store.close()


def test_unit_directions():
    assert all(unit_direction(u) == 1 for u in HIGHER)
    assert all(unit_direction(u) == -1 for u in LOWER)
    with pytest.raises(InvalidInputError, match="directions="):
        unit_direction("widgets")
    assert unit_direction("widgets", {"widgets": 1}) == 1


def test_every_unit_in_the_data_has_a_direction(vm_store):
    units = vm_store.sql("SELECT DISTINCT unit FROM vm_measurements")["unit"].to_list()
    assert len(units) >= 10
    assert {u: unit_direction(u) for u in units}  # raises on an unknown unit


def _check_splits(task):
    w = task.windows
    assert set(w["split"].unique()) == {"train", "val", "test"}
    vms = {s: set(w.filter(pl.col("split") == s)["vm"]) for s in ("train", "val", "test")}
    assert not vms["train"] & vms["test"] and not vms["val"] & vms["test"]
    assert task.labels["perf"].is_between(0, 1, closed="right").all()
    ids = task.metrics["window_id"].unique()
    assert set(ids) == set(task.labels["window_id"])


def test_temporal_task(vm_store):
    task = temporal_task(vm_store, window=4, max_windows_per_vm=150, until="2023-10-15")
    _check_splits(task)
    w = task.windows
    for sku in ("B8ms", "D8s_v5"):
        s = w.filter(pl.col("vm_sku") == sku)
        train_last = s.filter(pl.col("split") == "train")["time"].max()
        assert train_last < s.filter(pl.col("split") == "test")["time"].min()
    steps = task.metrics.group_by("window_id").agg(pl.col("t").n_unique())["t"]
    assert steps.max() <= 4
    assert "app_perf" in set(task.metrics["metric"].cast(pl.Utf8).unique())
    # labels vary (long-lived VMs degrade little: a mean over 13 app runs, each <= 1)
    assert (task.labels["perf"] < 1).mean() > 0.5 and task.labels["perf"].std() > 1e-3


def test_fingerprint_task_and_reduced_training(vm_store):
    from servecast.predictors.interference.evaluate import compare
    from servecast.predictors.interference.settings import PRESET

    task = fingerprint_task(vm_store, max_instances=600, max_steps=8, until="2023-08-15")
    _check_splits(task)
    w = task.windows
    assert w["time"].filter(w["split"] == "train").max() < \
        w["time"].filter(w["split"] == "test").min()
    # reconstructed instances: every window's micro-benchmarks ran within a few hours
    names = set(task.metrics["metric"].cast(pl.Utf8).unique())
    assert any(n.startswith("app:PostgreSQL") for n in names)
    assert not any(n.startswith(("PostgreSQL", "Redis")) for n in names)
    # the SKU marker: one `sku:<vm_sku>` metric = 1 at every step of every window
    marks = task.metrics.filter(pl.col("metric").cast(pl.Utf8).str.starts_with("sku:"))
    steps = task.metrics.select("window_id", "t").unique()
    assert marks.height == steps.height and (marks["value"] == 1.0).all()
    assert {n for n in names if n.startswith("sku:")} == {"sku:B8ms", "sku:D8s_v5"}
    # the VM's age: once per window, at the app step, after its micro-benchmarks (> 0 h)
    age = task.metrics.filter(pl.col("metric") == "vm_age_h")
    last = task.metrics.group_by("window_id").agg(pl.col("t").max())
    assert age.height == task.labels.height
    assert age.select("window_id", "t").sort("window_id").equals(last.sort("window_id"))
    assert (age["value"] > 0).all() and age["value"].max() < 24
    table = compare(task, ("dual", "mean"), PRESET.pick(True, epochs=1), log=lambda s: None)
    assert set(table["group"]) == {"all", "B8ms", "D8s_v5"}
    assert table["mae_pp"].is_finite().all()


def _series_task(perf: list[float]):
    """One VM's test windows in time order with known labels; window 0 has two metrics at
    step 0 (and a marker), window 1 one."""
    from datetime import datetime

    from servecast.predictors.interference.tasks import Task

    n = len(perf)
    windows = pl.DataFrame({"window_id": range(n), "split": ["test"] * n, "vm_sku": ["A"] * n,
                            "vm": ["A/1"] * n, "time": [datetime(2024, 1, 1, i) for i in range(n)]})
    labels = pl.DataFrame({"window_id": range(n), "perf": perf})
    metrics = pl.DataFrame({"window_id": [0, 0, 0, 0, 1], "t": [0.0, 0.0, 0.0, 1.0, 0.0],
                            "metric": ["a", "b", "sku:A", "a", "a"], "value": [1.0] * 5})
    return Task("series", metrics, labels, windows)


def test_neighbour_floor_and_metrics_per_step_known_answers():
    from servecast.predictors.interference.evaluate import metrics_per_step, neighbour_floor

    # a ramp, shuffled in row order: the previous label is 10 pp off, the two-sided ones exact;
    # only windows with two labels on each side count (the 3rd and 4th)
    task = _series_task([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    task.labels = task.labels.reverse()
    floor = neighbour_floor(task)
    assert set(floor["group"]) == {"all", "A"} and (floor["n"] == 2).all()
    mae = dict(zip(floor.filter(pl.col("group") == "all")["reference"],
                   floor.filter(pl.col("group") == "all")["mae_pp"], strict=True))
    assert mae["previous label"] == pytest.approx(10.0)
    assert mae["mean of previous and next label"] == pytest.approx(0.0, abs=1e-9)
    assert mae["median of 2 previous and 2 next labels"] == pytest.approx(0.0, abs=1e-9)
    # a zigzag: both nearest neighbours sit at the other level, the 4-median halfway
    zig = neighbour_floor(_series_task([0.9, 0.8, 0.9, 0.8, 0.9, 0.8]))
    assert zig.filter(pl.col("group") == "all")["mae_pp"].to_list() == pytest.approx(
        [10.0, 10.0, 5.0])
    k = metrics_per_step(task)
    assert k.select("metrics", "steps").rows() == [(1, 2), (2, 1)]  # the marker not counted
    assert k["share"].sum() == pytest.approx(1.0)
