"""Kernel-latency predictor, runtime/Estimator/CLI and the HELP-style adapter on real data
(reduced settings; the acceptance runs are benchmarks/kernel_latency_*.py)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from servecast.errors import InvalidInputError, UnknownNameError

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

HELD_OUT = "Tesla V100-PCIE-32GB"


@pytest.fixture(scope="module")
def gpu_store(tmp_path_factory, data):
    """A store with the NeuSight and HELP data ingested (real files)."""
    from servecast.store import Store

    store = Store(tmp_path_factory.mktemp("kl") / "gpu.duckdb")
    store.ingest("neusight", [data / "gpu/neusight"], trace="neusight")
    store.ingest("help-nasbench201", [data / "gpu/help_nasbench201"], trace="help_nasbench201")
    yield store
    store.close()


@pytest.fixture(scope="module")
def fitted(gpu_store, tmp_path_factory):
    """(model, saved dir, held-out frame, devices): fit on 4 GPUs' bmm/linear/softmax rows."""
    import torch

    from servecast.predictors.kernel_latency import data
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    torch.set_num_threads(1)
    frame = data.neusight_frame(gpu_store).filter(pl.col("op").is_in(["bmm", "linear",
                                                                       "softmax"]))
    devices = data.device_specs(gpu_store)
    train = frame.filter(pl.col("device") != HELD_OUT).sample(12_000, seed=0)
    test = frame.filter(pl.col("device") == HELD_OUT).sample(3_000, seed=0)
    model = KernelLatencyPredictor(devices, epochs=4, batch_size=512).fit(train)
    path = model.save(tmp_path_factory.mktemp("models") / "kernel_latency")
    return model, path, test, devices


def test_held_out_gpu_is_predicted_from_its_spec_better_than_roofline(fitted):
    model, _, test, devices = fitted
    ev = model.evaluate(test)
    assert ev["rows"] == test.height
    assert ev["mdape"] < ev["roofline_mdape"]
    assert ev["mdape"] < 40
    pred = model.predict(test)["latency_ms"].to_numpy()
    assert pred.shape == (test.height,) and (pred > 0).all()


def test_saved_model_runtime_estimator_and_cli_agree(fitted, tmp_path):
    from servecast.cli import main
    from servecast.estimator import Estimator
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    model, path, test, devices = fitted
    spec = devices[HELD_OUT]
    row = pl.DataFrame({"op": ["bmm"], "device": [HELD_OUT], "B": [8], "M": [1024],
                        "N": [1024], "K": [1024]})
    want = float(model.predict(row)["latency_ms"].to_numpy()[0])
    est = Estimator.load(path.parent)
    assert est.kernel_latency("bmm", [8, 1024, 1024, 1024], spec) == pytest.approx(want, 1e-4)
    assert est.kernel_latency("matmul", {"B": 8, "M": 1024, "N": 1024, "K": 1024},
                              spec) == pytest.approx(want, 1e-4)
    batch = est.kernel_latency_batch(test, devices)
    np.testing.assert_allclose(batch, model.predict(test)["latency_ms"].to_numpy(), rtol=1e-4)
    # the scalar fast path (plain-float features, folded first layer) equals the batch path
    cols = {"bmm": ["B", "M", "N", "K"], "linear": ["B", "M", "N", "K"], "softmax": ["B", "H"]}
    one = [est.kernel_latency(r["op"], [r[c] for c in cols[r["op"]]], devices[r["device"]])
           for r in test.head(60).iter_rows(named=True)]
    np.testing.assert_allclose(one, batch[:60], rtol=1e-6)
    again = KernelLatencyPredictor.load(path)
    assert again.predict(test).equals(model.predict(test))
    with pytest.raises(InvalidInputError, match="missing key"):
        est.kernel_latency("bmm", [8, 64, 64, 64], {"Mem_Bw": 900})
    with pytest.raises(InvalidInputError, match="must be > 0"):
        est.kernel_latency("bmm", [8, 0, 64, 64], spec)
    with pytest.raises(UnknownNameError, match="unknown op"):
        est.kernel_latency("attention", [8, 64], spec)

    good = tmp_path / "v100.json"
    good.write_text(json.dumps({"Device": HELD_OUT, **spec}))
    args = ["estimate", "kernel-latency", "--model", str(path), "--device-spec", str(good),
            "--op", "bmm", "--shape", "8,1024,1024,1024"]
    assert main(args) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Device": "x", "Mem_Bw": 900}))
    assert main(args[:5] + [str(bad)] + args[6:]) == 2
    assert main(args[:-1] + ["8,-1,2,3"]) == 2


def test_help_adapter_ranks_a_meta_valid_device_from_ten_samples(gpu_store, tmp_path):
    import torch

    from servecast.predictors.hardware_adaptive.predictor import (
        HardwareAdaptiveLatencyPredictor,
    )
    from servecast.predictors.kernel_latency import data

    torch.set_num_threads(1)
    lat, archs, splits = data.help_frames(gpu_store)
    refs = splits["hardware_embedding_arch_indices"]
    model = HardwareAdaptiveLatencyPredictor(epochs=3, steps_per_epoch=40)
    model.meta_fit(lat, archs, splits["meta_train"], splits["meta_valid"], refs)
    report = model.evaluate(lat, archs, ["titanx_32"])
    rho = dict(zip(report["method"], report["spearman"], strict=True))
    assert rho["meta-learner (ours)"] > rho["FLOPs proxy"]
    assert rho["meta-learner (ours)"] > 0.85

    dev = lat.filter(pl.col("device") == "gold_6240")
    samples = dev.filter(pl.col("arch_index").is_in(refs)).select("arch_index", "latency_ms")
    adapted = model.adapt(samples)
    pred = adapted.predict([0, 1, 2])
    assert pred.shape == (3,) and (pred > 0).all()
    with pytest.raises(InvalidInputError, match="lack reference"):
        model.adapt(samples.head(5))
    with pytest.raises(InvalidInputError, match="both meta_train and meta_valid"):
        HardwareAdaptiveLatencyPredictor().meta_fit(lat, archs, ["pixel3"], ["pixel3"], refs)
    loaded = HardwareAdaptiveLatencyPredictor.load(model.save(tmp_path / "help"))
    np.testing.assert_allclose(loaded.adapt(samples).predict([0, 1, 2]), pred, rtol=1e-5)
