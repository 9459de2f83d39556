"""NeuSight op graphs as kernel-model frames (`predictors.kernel_latency.opgraph`), on the real
`gpu/neusight_e2e` files: a one-layer graph weighted by num_layer holds the same kernels as
the whole-model fusion graph; traced nodes join their graph's shapes; bad text is refused."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from servecast.datasets.neusight_e2e import graph_rows
from servecast.errors import DataFileError
from servecast.predictors.kernel_latency import opgraph
from servecast.predictors.kernel_latency.ops import canonical_op
from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor
from servecast.store import Store

#: the GPU folder the store holds: it has traces and runs with and without fusion
GPU = "NVIDIA_A100-PCIE-40GB"


@pytest.fixture(scope="module")
def root(data):
    return data / "gpu/neusight_e2e"


@pytest.fixture(scope="module")
def store(root, tmp_path_factory):
    """A store of one GPU's runs (GPU) with every op graph and model config."""
    top = tmp_path_factory.mktemp("og") / "neusight_e2e"
    shutil.copytree(root / "label" / GPU, top / "label" / GPU)
    shutil.copytree(root / "opgraph", top / "opgraph")
    shutil.copytree(root / "model_configs", top / "model_configs")
    path = top.parent / "s.duckdb"
    with Store(path) as s:
        s.ingest("neusight-e2e", [top], trace="neusight_e2e")
    return Store(path, read_only=True)


def op_counts(rows: list[dict], weights: list[int]) -> Counter:
    """Kernel count per family: GEMMs together (NeuSight's fusion graphs name some batched
    matmuls Linear), norms by op."""
    out: Counter = Counter()
    for node, w in zip(rows, weights, strict=True):
        for k in opgraph.kernels(node["fw_ops"])[0]:
            out["gemm" if k["op"] in ("bmm", "linear") else k["op"]] += w
    return out


@pytest.mark.parametrize("run,layers", [("bert_large-inf-512-16", 24),
                                        ("gpt2_large-inf-1024-4", 36)])
def test_one_layer_graph_times_layers_is_the_fusion_graph(root, run, layers):
    one = graph_rows(root / f"opgraph/{run}.csv")
    full = graph_rows(root / f"opgraph/{run}-fusion.csv")
    weights = opgraph.layer_weights([r["name"] for r in one], layers)
    assert max(weights) == layers and weights.count(1) > 0
    a, b = op_counts(one, weights), op_counts(full, [1] * len(full))
    for op in ("gemm", "ln", "softmax"):
        assert a[op] == b[op] >= layers, op
    # unweighted, the one-layer graph is far short of the whole model
    assert op_counts(one, [1] * len(one))["gemm"] < b["gemm"] / 10


def test_kernels_read_neusight_dims_orders():
    rows, skipped = opgraph.kernels(
        "[['Linear', (4096, 1280, 3840)], ['BMM', (80, 1024, 64, 512)], "
        "['VECsoftmax', (81920, 1024)], ['MEM', ((4, 1024), (4, 1024, 1280))]]")
    assert skipped == 1
    assert rows[0] == {"op": "linear", "B": 1, "M": 4096, "K": 1280, "N": 3840, "H": None}
    assert (rows[1]["B"], rows[1]["M"], rows[1]["K"], rows[1]["N"]) == (80, 1024, 64, 512)
    assert rows[2]["op"] == canonical_op("softmax") and rows[2]["B"] == 81920
    assert opgraph.kernels("[]") == ([], 0)


@pytest.mark.parametrize("text", ["[['Linear', (1, 2)", "[('Linear',)]", "42"])
def test_bad_fw_ops_are_refused_naming_the_node(text):
    with pytest.raises(DataFileError, match="op graph r node n"):
        opgraph.kernels(text, "op graph r node n")


def test_graph_kernels_weight_layers_and_count_what_is_left_out(store, root):
    g = opgraph.graph_kernels(store)
    runs = set(g["run"].to_list())
    labels = {p.stem for p in (root / "label" / GPU).glob("*-inf-*.json")
              if (root / "opgraph" / f"{p.stem}.csv").exists()}
    assert runs == labels
    bert = g.filter(pl.col("run") == "bert_large-inf-512-16", pl.col("op").is_not_null())
    # BERT-large: 4 attention + 2 MLP linears per layer, all counted num_layer times
    linear = bert.filter(pl.col("op") == "linear")
    assert linear["weight"].sum() >= 6 * 24
    skipped = g.filter(pl.col("op").is_null(), pl.col("run") == "bert_large-inf-512-16")
    assert skipped["weight"].item() > 0


def test_traced_kernels_carry_the_graph_shape_and_the_measured_time(store, root):
    t = opgraph.traced_kernels(store)
    assert set(t["device"].unique()) == {GPU}
    assert (t["latency_ms"] > 0).all()
    row = t.filter(pl.col("run") == "gpt2_large-inf-1024-4", pl.col("node") == "addmm").row(
        0, named=True)
    assert (row["op"], row["M"], row["K"], row["N"]) == ("linear", 4096, 1280, 3840)
    raw = [r for r in graph_rows(root / "opgraph/gpt2_large-inf-1024-4.csv")
           if r["name"] == "addmm"]
    assert "4096, 1280, 3840" in raw[0]["fw_ops"]
    assert t.select(opgraph.device_name())["device"].unique().to_list() == [GPU.replace("_", " ")]


@pytest.fixture(scope="module")
def bench():
    """benchmarks/neusight_e2e.py as a module (its folder on sys.path for its sibling)."""
    folder = Path(__file__).parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("neusight_e2e", folder / "neusight_e2e.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(folder))
    return mod


@pytest.mark.slow
def test_benchmark_predicts_each_run_from_its_graph(store, data, bench):
    name = GPU.replace("_", " ")
    devices = {name: json.loads((data / f"gpu/neusight/train/device_configs/{GPU}.json")
                                .read_text())}
    traced = opgraph.traced_kernels(store).with_columns(opgraph.device_name())
    model = KernelLatencyPredictor(devices, epochs=2, ensemble=1, hidden=16).fit(
        traced.select("op", "device", "B", "M", "N", "K", "H", "latency_ms"))
    roofline = KernelLatencyPredictor.predict_roofline
    e2e = bench.whole_model(store, model, roofline, devices, [name])
    runs = {r for r in opgraph.graph_kernels(store)["run"].unique()}
    assert set(e2e["run"]) <= runs and len(e2e) >= 4
    assert (e2e["model_ms"] > 0).all() and (e2e["measured_ms"] > 0).all()
    # a one-layer graph weighted by num_layer predicts its fusion twin's sum (same GEMMs)
    by = dict(zip(e2e["run"], e2e["roofline_ms"], strict=True))
    twins = [r for r in by if r + "-fusion" in by]
    assert twins
    for r in twins:
        assert by[r] == pytest.approx(by[r + "-fusion"], rel=0.05)
    assert bench.whole_model(store, model, roofline, devices, []).is_empty()  # only `keep`
    # the traced GPU is the training GPU here: nothing is held out
    assert bench.held_out(store, model, roofline, devices, [name]).is_empty()
    ood = bench.held_out(store, model, roofline, devices, [])
    assert set(ood["op"]) == {"bmm", "linear"} and (ood["model_ape"] >= 0).all()
