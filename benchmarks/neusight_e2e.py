"""NeuSight whole-model runs against the kernel-latency model (fit on NeuSight's kernels of the
GPUs it also ran whole models on: P4, T4, P100, V100, A100-PCIE-40GB).

1. Whole-model forward latency on those training GPUs: every single-GPU inference run's op
   graph (`opgraph.graph_kernels`: non-fusion graphs hold one layer, counted num_layer times;
   fusion graphs the whole model) is predicted kernel by kernel and summed, then compared with
   the measured forward latency (`serving_latencies.prompt_ms`). Absolute % error per run,
   mean per GPU (NeuSight's paper reports per-GPU mean errors: docs/results.md).
2. Held-out kernels: the traced bmm / linear nodes of the GPUs outside the training set
   (`opgraph.traced_kernels`), predicted from their spec sheets (AMD_SPECS); MdAPE per op and
   GPU, pooled, beside roofline-only.
3. Held-out whole models: the same GPUs' single-GPU inference runs, predicted as in 1 from
   their spec sheets alone (no kernel of theirs in training); mean abs % error per GPU.
Sections 2 and 3 print the AMD GPUs once with the FP32 vector and once with the FP32
matrix peak (AMD_FP32_MATRIX).

    .venv/bin/python benchmarks/neusight_e2e.py [--db FILE] [--epochs 20] [--ensemble 3]
        [--max-rows 150000] [--seed 0] [--threads 1] [--shape-weight W]
        [--power-gflops-per-w C]

Without --db it ingests ../shared/datasets/gpu/neusight and gpu/neusight_e2e into a
temporary store.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from kernel_latency_logo import apply_physics, model_args, open_store

#: vendor data-sheet specs (NeuSight keys) of the AMD GPUs NeuSight traced: MI100 (120 CUs,
#: 1502 MHz, 23.1 TFLOP/s FP32 vector, 1228.8 GB/s, 32 GB, 8 MB L2); MI210 and one MI250 GCD
#: (PyTorch sees each of the MI250's two dies as a device: 104 CUs, 1700 MHz, 22.6 TFLOP/s
#: FP32 vector, 1638.4 GB/s, 64 GB, 8 MB L2). A CU has 64 stream processors. TDP: MI100 and
#: MI210 300 W, MI250 500 W (250 W per die).
AMD_SPECS: dict[str, dict] = {
    "AMD Instinct MI100": {"Dev_Mem": 32, "Mem_Bw": 1228.8, "Num_Sm": 120, "Core_Per_SM": 64,
                           "Freq": 1502, "SingleFLOPs": 23100, "L2Cache": 8, "TDP": 300},
    "AMD Instinct MI210": {"Dev_Mem": 64, "Mem_Bw": 1638.4, "Num_Sm": 104, "Core_Per_SM": 64,
                           "Freq": 1700, "SingleFLOPs": 22600, "L2Cache": 8, "TDP": 300},
    "AMD Instinct MI250": {"Dev_Mem": 64, "Mem_Bw": 1638.4, "Num_Sm": 104, "Core_Per_SM": 64,
                           "Freq": 1700, "SingleFLOPs": 22600, "L2Cache": 8, "TDP": 250},
}
#: the same GPUs' data-sheet FP32 *matrix* peak (GFLOP/s; MI250: one die's half of 90.5
#: TFLOP/s): rocBLAS runs FP32 GEMMs on the matrix cores, so this is the GEMM ceiling the
#: vector peak above does not describe (NeuSight's own AMD device configs give matrix ops
#: this peak, `SingleFLOPsMM`); the benchmark reports the held-out GPUs with both
AMD_FP32_MATRIX = {"AMD Instinct MI100": 46100, "AMD Instinct MI210": 45300,
                   "AMD Instinct MI250": 45250}


def ape(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Absolute percentage error (%) per row."""
    return np.abs(pred / true - 1) * 100


def whole_model(store, model, roofline, devices: dict, keep: list[str]) -> pl.DataFrame:
    """Per run of the GPUs in `keep`: measured forward ms, predicted (model / roofline)
    sums and their abs % errors."""
    from servecast.predictors.kernel_latency.opgraph import device_name, graph_kernels

    graph = graph_kernels(store)
    skipped = graph.filter(pl.col("op").is_null()).select("run", skipped="weight")
    kern = graph.filter(pl.col("op").is_not_null())
    labels = store.sql(
        "SELECT device, model, extra->>'run' AS run, prompt_ms AS measured_ms "
        "FROM serving_latencies WHERE trace = 'neusight_e2e' AND extra->>'mode' = 'inf' "
        "AND extra->>'parallel' IS NULL AND prompt_ms > 0")
    labels = labels.with_columns(device_name())
    labels = labels.filter(pl.col("device").is_in(keep))
    if labels.is_empty():  # no run of these GPUs
        return labels.with_columns(**{c: pl.lit(None, pl.Float64) for c in (
            "model_ms", "roofline_ms", "skipped", "model_err", "roofline_err")})
    rows = []
    for dev in labels["device"].unique().sort().to_list():
        frame = kern.with_columns(device=pl.lit(dev))
        w = frame["weight"].to_numpy()
        sums = frame.select("run").with_columns(
            model_ms=model.predict(frame)["latency_ms"].to_numpy() * w,
            roofline_ms=roofline(frame, devices) * w).group_by("run").sum()
        rows.append(sums.with_columns(device=pl.lit(dev)))
    pred = pl.concat(rows)
    out = labels.join(pred, on=["device", "run"]).join(skipped, on="run")
    return out.with_columns(
        model_err=(pl.col("model_ms") / pl.col("measured_ms") - 1).abs() * 100,
        roofline_err=(pl.col("roofline_ms") / pl.col("measured_ms") - 1).abs() * 100,
    ).sort("device", "run")


def held_out(store, model, roofline, devices: dict, train: list[str]) -> pl.DataFrame:
    """Traced bmm / linear nodes of GPUs outside `train` with a spec sheet: APE per node and
    log2(model prediction / measured)."""
    from servecast.predictors.kernel_latency.opgraph import device_name, traced_kernels

    t = traced_kernels(store).with_columns(device_name())
    t = t.filter(pl.col("op").is_in(["bmm", "linear"]), ~pl.col("device").is_in(train),
                 pl.col("device").is_in(list(devices)))
    y = t["latency_ms"].to_numpy()
    if t.is_empty():  # no GPU outside `train` has traces and a spec sheet
        return t.with_columns(model_ape=pl.lit(None, pl.Float64),
                              roofline_ape=pl.lit(None, pl.Float64),
                              log2_ratio=pl.lit(None, pl.Float64))
    pred = model.predict(t)["latency_ms"].to_numpy()
    return t.with_columns(model_ape=ape(pred, y), roofline_ape=ape(roofline(t, devices), y),
                          log2_ratio=np.log2(pred / y))


def main() -> None:
    import torch

    from servecast.predictors.kernel_latency import data
    from servecast.predictors.kernel_latency.opgraph import device_name
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    ap = model_args(argparse.ArgumentParser())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    apply_physics(args)
    store = open_store(args.db, [("neusight", "gpu/neusight", "neusight"),
                                 ("neusight-e2e", "gpu/neusight_e2e", "neusight_e2e")])
    traced = store.sql("SELECT DISTINCT device FROM kernel_latencies "
                       "WHERE trace = 'neusight_e2e'").select(device_name())["device"]
    frame = data.neusight_frame(store)
    frame = frame.filter(pl.col("device").is_in(traced.to_list()))
    train = sorted(frame["device"].unique().to_list())
    devices = data.device_specs(store) | AMD_SPECS
    t0 = time.perf_counter()
    model = KernelLatencyPredictor(devices, epochs=args.epochs, max_rows=args.max_rows,
                                   batch_size=2048, ensemble=args.ensemble,
                                   shape_weight=args.shape_weight, seed=args.seed).fit(frame)
    fit_s = time.perf_counter() - t0
    roofline = KernelLatencyPredictor.predict_roofline
    print(f"fit on {len(frame):,} kernels of {', '.join(train)} in {fit_s:.0f} s")
    pl.Config.set_tbl_rows(200)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_float_precision(1)
    pl.Config.set_tbl_width_chars(200)

    e2e = whole_model(store, model, roofline, devices, train)
    print("\n1. whole-model forward latency (ms) per run, abs % error:")
    print(e2e.select("device", "run", "measured_ms", "model_ms", "model_err", "roofline_err",
                     "skipped"))
    print_per_gpu(e2e)

    matrix = {k: v | {"SingleFLOPs": AMD_FP32_MATRIX[k]} for k, v in AMD_SPECS.items()}
    for label, specs in (("FP32 vector peak", AMD_SPECS), ("FP32 matrix peak", matrix)):
        devs = devices | specs
        ood = held_out(store, model.with_devices(devs), roofline, devs, train)
        print(f"\n2. held-out GPUs' traced kernels, spec with the {label} (MdAPE %, "
              "model | roofline-only; signed: median log2(predicted / measured)):")
        aggs = [pl.len().alias("n"), pl.col("model_ape").median(),
                pl.col("roofline_ape").median(), pl.col("log2_ratio").median()]
        per = ood.group_by("device", "op").agg(aggs)
        pooled = ood.group_by("op").agg(aggs).with_columns(device=pl.lit("pooled"))
        print(pl.concat([per, pooled.select(per.columns)]).sort("device", "op"))
        get = {r["op"]: r["model_ape"] for r in pooled.to_dicts()}
        print(f"pooled: bmm {get.get('bmm', float('nan')):.1f}% (NeuSight 13.8), linear "
              f"{get.get('linear', float('nan')):.1f}% (NeuSight 13.9)")
        whole = whole_model(store, model.with_devices(devs), roofline, devs, list(specs))
        print(f"\n3. held-out GPUs' whole-model forward latency, spec with the {label} "
              "(ms per run, abs % error):")
        print(whole.select("device", "run", "measured_ms", "model_ms", "model_err",
                           "roofline_err"))
        print_per_gpu(whole)


def print_per_gpu(runs: pl.DataFrame) -> None:
    """Mean abs % error per GPU and over all runs (and over the fusion runs alone)."""
    print("mean abs % error per GPU (runs):")
    print(runs.group_by("device").agg(pl.len().alias("runs"), pl.col("model_err").mean(),
                                      pl.col("roofline_err").mean()).sort("device"))
    fusion = runs.filter(pl.col("run").str.ends_with("-fusion"))["model_err"].mean()
    print(f"all runs: model {runs['model_err'].mean():.1f}%, roofline "
          f"{runs['roofline_err'].mean():.1f}% (n={len(runs)}); fusion runs only: model "
          f"{float('nan') if fusion is None else fusion:.1f}%")

if __name__ == "__main__":
    main()
