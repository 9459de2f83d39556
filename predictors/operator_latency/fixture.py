"""Small operator-latency fitting problems for the conformance tests (registry `fixture`).

bf16 GEMMs and prefill / decode attention on three catalog GPUs (A100-SXM, H100-SXM,
L40S): latency = the physics time times a per-op efficiency and lognormal noise; 900 train /
150 test rows, 20 trees per residual. The step-time fixture fits on the same operator rows
and predicts 12 batches of shipped models on those GPUs."""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast import gpus
from servecast.predictors.operator_latency import physics
from servecast.predictors.registry import Fixture

DEVICES = ("a100-sxm", "h100-sxm", "l40s")
EFFICIENCY = {"gemm": 1.3, "attn_prefill": 1.6, "attn_decode": 2.0}  # measured / physics


def operators(n: int, seed: int) -> pl.DataFrame:
    """`n` operator rows (the columns of `operator_latency.data.KEY` + latency_ms)."""
    rng = np.random.default_rng(seed)
    op = rng.choice(list(EFFICIENCY), n)
    gemm = op == "gemm"
    frame = pl.DataFrame({
        "device": rng.choice(DEVICES, n), "op": op, "dtype": "bf16", "kv_dtype": "bf16",
        "M": np.where(gemm, 2 ** rng.integers(0, 14, n), 2 ** rng.integers(4, 13, n)),
        "N": np.where(gemm, 2 ** rng.integers(8, 15, n), 2 ** rng.integers(0, 13, n)),
        "K": np.where(gemm, 2 ** rng.integers(8, 15, n), 0),
        "B": np.where(gemm, 1, 2 ** rng.integers(0, 8, n)),
        "H": np.where(gemm, 1, 32), "kv_heads": np.where(gemm, 1, 8),
        "head_dim": np.where(gemm, 0, 128), "tp": 1,
    }).with_columns(M=pl.when(pl.col("op") == "attn_decode").then(1).otherwise(pl.col("M")))
    t = np.empty(n)
    for (dev, o), part in frame.with_row_index("_i").group_by(["device", "op"]):
        rows = part["_i"].to_numpy()
        shape = {c: part[c].to_numpy() for c in ("M", "N", "K", "B", "H", "kv_heads",
                                                 "head_dim")}
        t[rows] = physics.features(o, gpus.resolve_spec(dev), **shape)[0] * EFFICIENCY[o]
    return frame.with_columns(latency_ms=t * rng.lognormal(0, 0.1, n))


def fixture(seed: int = 0) -> Fixture:
    from servecast.predictors.operator_latency.predictor import OperatorLatencyModel

    return Fixture(make=lambda: OperatorLatencyModel(trees=20, seed=seed),
                   train=operators(900, seed), test=operators(150, seed + 1),
                   columns=("latency_ms_pred", "physics_ms", "roofline_ms"))


def batches(n: int, seed: int) -> pl.DataFrame:
    """`n` engine iterations [model, gpu, tp, prefill, decode, measured_ms] of shipped
    models; `measured_ms` is a stand-in (10 ms per 1,000 tokens) for evaluate."""
    rng = np.random.default_rng(seed)
    models = rng.choice(["llama-3.1-8b", "qwen2-7b", "llama-2-7b"], n)
    prefill = [[int(x)] if rng.random() < 0.5 else [] for x in rng.integers(16, 4096, n)]
    decode = [[int(c)] * int(b) for b, c in zip(rng.integers(1, 64, n),
                                                rng.integers(16, 4096, n), strict=True)]
    tokens = np.array([sum(p) + len(d) for p, d in zip(prefill, decode, strict=True)])
    return pl.DataFrame({"model": models, "gpu": rng.choice(DEVICES, n),
                         "tp": rng.choice([1, 2], n), "prefill": prefill, "decode": decode,
                         "measured_ms": 10.0 * tokens / 1000.0 + 5.0},
                        schema_overrides={"prefill": pl.List(pl.Int64),
                                          "decode": pl.List(pl.Int64)})


def step_fixture(seed: int = 0) -> Fixture:
    from servecast.predictors.step_time.model import StepTimeModel

    return Fixture(make=lambda: StepTimeModel(trees=20, seed=seed, overhead_ms=1.5),
                   train=operators(900, seed), test=batches(12, seed + 1),
                   columns=("step_ms",))
