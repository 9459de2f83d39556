"""benchmarks/training_speedup.py: the kernel model's training arrays, the same MLP fit on
each accelerator there is, and the .npz a GPU machine without the store trains from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from servecast.predictors.kernel_latency.fixture import DEVICES, kernels
from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training_speedup.py"


@pytest.fixture(scope="module")
def arrays():
    """The fit's arrays of the registry fixture's kernels, as `export_arrays` writes them."""
    model = KernelLatencyPredictor(DEVICES, hidden=16, layers=2, batch_size=256)
    X, y = model.training_arrays(kernels(1200, 0))
    return {"X": X, "y": y, **{k: np.asarray(model.config[k]) for k in
                               ("hidden", "layers", "batch_size", "lr", "epochs")}}


def test_training_arrays_are_what_fit_standardizes(arrays):
    """Standardized float32 features (mean 0, std 1 on varying columns) and the
    log(latency / roofline) targets, one row per kernel."""
    X, y = arrays["X"], arrays["y"]
    assert X.dtype == y.dtype == np.float32 and len(X) == len(y) == 1200
    varying = X.std(0) > 1e-3
    assert varying.sum() >= 5
    assert np.abs(X[:, varying].mean(0)).max() < 1e-3
    assert np.allclose(X[:, varying].std(0), 1, atol=1e-3)
    roof = KernelLatencyPredictor.predict_roofline(kernels(1200, 0), DEVICES)
    assert np.allclose(np.exp(y), kernels(1200, 0)["latency_ms"].to_numpy() / roof, rtol=1e-4)


def test_the_benchmark_trains_from_an_npz_on_the_cpu_and_names_what_it_skips(arrays,
                                                                               tmp_path):
    path = tmp_path / "design.npz"
    np.savez_compressed(path, **arrays)
    out = subprocess.run([sys.executable, str(SCRIPT), "--npz", str(path), "--epochs", "2",
                          "--accelerators", "cpu", "gpu"], capture_output=True, text=True,
                         check=True).stdout
    assert "1,200 rows x" in out and "2 epochs, MLP 2 x 16, batch 256" in out
    cpu = next(line for line in out.splitlines() if line.startswith("cpu:"))
    assert "validation L1" in cpu and "speedup over cpu 1.00x" in cpu
    gpu = next(line for line in out.splitlines() if line.startswith("gpu:"))
    assert "not on this machine, skipped" in gpu or "speedup over cpu" in gpu


def test_a_fit_learns_the_target(arrays, benchmark_module):
    """Sixty short epochs bring the validation L1 below the spread of the targets (the fit is
    real: a constant prediction at the median scores the target's mean abs deviation)."""
    bench = benchmark_module("training_speedup")
    got = bench.fit_once(arrays, "cpu", epochs=60, seed=0)
    y = arrays["y"]
    assert got["seconds"] > 0 and got["s_per_epoch"] == pytest.approx(got["seconds"] / 60)
    assert got["val_l1"] < 0.8 * np.mean(np.abs(y - np.median(y)))
