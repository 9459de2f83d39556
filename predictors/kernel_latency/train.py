"""Training entry points shared by the CLI, the demo and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from servecast.predictors.kernel_latency import data
from servecast.predictors.kernel_latency.config import PRESET, KernelSettings
from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor


def kernel_training_data(store, vidur: bool = True, neusight_trace: str = "neusight",
                         vidur_trace: str = "vidur_mlp") -> tuple[pl.DataFrame, dict]:
    """(frame, devices): NeuSight kernels [+ Vidur operators] and every device's spec."""
    devices = data.device_specs(store)
    cols = ["op", "device", "B", "M", "N", "K", "H", "in_channels", "out_channels",
            "kernel_size", "input_size", "stride", "padding", "latency_ms"]
    frames = [data.neusight_frame(store, neusight_trace).select(cols)]
    if vidur:
        devices = devices | data.VIDUR_SPECS
        frames.append(data.vidur_frame(store, vidur_trace)
                      .with_columns([pl.lit(None, pl.Float64).alias(c) for c in cols[7:13]])
                      .select(cols))
    frame = pl.concat([f.with_columns(pl.col(c).cast(pl.Float64) for c in cols[2:13])
                       for f in frames])
    return frame, devices


def train_kernel_model(store, settings: KernelSettings = PRESET.full,
                       vidur: bool = True, neusight_trace: str = "neusight",
                       vidur_trace: str = "vidur_mlp",
                       log: Callable[[str], None] | None = None, **kw
                       ) -> tuple[KernelLatencyPredictor, pl.DataFrame]:
    """Fit the kernel-latency model on the store's traces with `settings` (a preset of
    `config.PRESET`; `kw` goes to `KernelLatencyPredictor`); returns (model, in-sample
    per-op MdAPE frame [op, rows, mdape, roofline_mdape])."""
    frame, devices = kernel_training_data(store, vidur, neusight_trace, vidur_trace)
    if log:
        log(f"training on {frame.height:,} kernels of {frame['device'].n_unique()} devices")
    model = KernelLatencyPredictor(devices, epochs=settings.epochs, max_rows=settings.max_rows,
                                   ensemble=settings.ensemble, **kw).fit(frame)
    ev = model.evaluate(frame)
    model.card["metrics"] = {"in_sample": ev}
    report = pl.DataFrame([{"op": "all", "rows": ev["rows"], "mdape": ev["mdape"],
                            "roofline_mdape": ev["roofline_mdape"]}]
                          + [{"op": k, **v} for k, v in ev["per_op"].items()])
    return model, report
