"""Lightning training on the CPU and on a GPU: the kernel-latency model's residual MLP (the
network of issue 23's "the same Lightning code on a GPU, quote the speedup"), fitted by the
same `kernel_latency.mlp.fit_mlp` on every accelerator there is, timed, with each fit's
validation L1 beside its time.

The data are the real training arrays of `KernelLatencyPredictor.fit`
(`training_arrays`: NeuSight's kernels of its five training GPUs, standardized features
and log(latency / roofline) targets), at the predictor's MLP settings; one member on every
feature column, the last `VAL_SHARE` of a seeded permutation held out for the L1.
`--export FILE` writes those arrays (compressed float32 .npz, a few MB) where the store is;
`--npz FILE` trains from such a file, which needs only numpy, torch and Lightning (a GPU
machine without duckdb or polars).

    .venv/bin/python benchmarks/training_speedup.py --db STORE [--rows 150000] [--epochs 20]
        [--accelerators cpu gpu] [--export FILE | --npz FILE]

Prints per accelerator: wall seconds of the fit, seconds per epoch, validation L1, and the
speedup over the CPU (the first accelerator) in the same run; an accelerator this machine
lacks is reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: share of the rows held out for the validation L1 (never trained on)
VAL_SHARE = 0.1


def export_arrays(db: str | None, rows: int, seed: int) -> dict[str, np.ndarray]:
    """The fit's arrays and MLP settings from a store with NeuSight's kernels: X float32
    (rows, n), y float32 (rows,), and hidden / layers / batch_size / lr / epochs (the
    predictor's defaults) as 0-d arrays."""
    from kernel_latency_logo import open_store

    from servecast.predictors.kernel_latency import data
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    store = open_store(db, [("neusight", "gpu/neusight", "neusight")])
    frame = data.neusight_frame(store)
    if frame.height > rows:
        frame = frame.sample(rows, seed=seed)
    model = KernelLatencyPredictor(data.device_specs(store))
    X, y = model.training_arrays(frame)
    cfg = model.config
    return {"X": X, "y": y, **{k: np.asarray(cfg[k]) for k in
                               ("hidden", "layers", "batch_size", "lr", "epochs")}}


def available(accelerator: str) -> bool:
    """Whether this machine has `accelerator` ("cpu" always; "gpu" / "cuda" with CUDA)."""
    import torch

    return accelerator == "cpu" or torch.cuda.is_available()


def fit_once(arrays: dict, accelerator: str, epochs: int, seed: int) -> dict:
    """One `fit_mlp` on `accelerator`: wall seconds, seconds per epoch and the validation
    L1 (log units) of the returned weights, scored in numpy."""
    from servecast.predictors.kernel_latency.mlp import fit_mlp
    from servecast.predictors.kernel_latency.runtime import MergedMLP

    X, y = arrays["X"], arrays["y"]
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(len(y) * (1 - VAL_SHARE))
    fit, val = order[:cut], order[cut:]
    t0 = time.perf_counter()
    weights = fit_mlp(X[fit], y[fit], hidden=int(arrays["hidden"]),
                      layers=int(arrays["layers"]), epochs=epochs,
                      batch_size=int(arrays["batch_size"]), lr=float(arrays["lr"]), seed=seed,
                      accelerator=accelerator)
    wall = time.perf_counter() - t0
    l1 = float(np.mean(np.abs(MergedMLP(weights, 1)(X[val].astype(np.float64)) - y[val])))
    return {"accelerator": accelerator, "seconds": wall, "s_per_epoch": wall / epochs,
            "val_l1": l1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db")
    ap.add_argument("--npz", help="train from arrays written by --export (no store needed)")
    ap.add_argument("--export", help="write the arrays to this .npz and stop")
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--epochs", type=int, help="default: the predictor's (20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accelerators", nargs="+", default=["cpu", "gpu"])
    args = ap.parse_args()
    if args.npz:
        with np.load(args.npz) as f:
            arrays = dict(f)
    else:
        arrays = export_arrays(args.db, args.rows, args.seed)
    if args.export:
        np.savez_compressed(args.export, **arrays)
        print(f"wrote {args.export}: {arrays['X'].shape[0]:,} rows x {arrays['X'].shape[1]} "
              "features")
        return
    epochs = args.epochs or int(arrays["epochs"])
    print(f"{arrays['X'].shape[0]:,} rows x {arrays['X'].shape[1]} features, {epochs} "
          f"epochs, MLP {int(arrays['layers'])} x {int(arrays['hidden'])}, batch "
          f"{int(arrays['batch_size'])}")
    runs = []
    for acc in args.accelerators:
        if not available(acc):
            print(f"{acc}: not on this machine, skipped")
            continue
        runs.append(fit_once(arrays, acc, epochs, args.seed))
        r = runs[-1]
        print(f"{acc}: {r['seconds']:.1f} s ({r['s_per_epoch']:.2f} s/epoch), validation L1 "
              f"{r['val_l1']:.4f}, speedup over {runs[0]['accelerator']} "
              f"{runs[0]['seconds'] / r['seconds']:.2f}x")


if __name__ == "__main__":
    main()
