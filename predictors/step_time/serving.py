"""Measured serving latencies as step-time rows, and the per-engine overhead fitted on them.

`serving_frame(store)` reads the store's `serving_latencies` of Argonne's LLM-Inference-Bench
(vLLM static batches: one prefill step of B prompts, then every decode step up to the output
length) and Splitwise's perf model (prompt time = one prefill step, per-token time = one
decode step at the middle of the output), one row per measurement: `engine` (the engine
family), `config` (a shipped model config), `gpu` (a catalog name), `num_gpus` (TP),
`batch_size`, `prompt_tokens`, `output_tokens`, `kind` (batch | prompt | token),
`measured_ms` and `iterations` (engine iterations the measurement spans).

GPU mapping (an assumption the data does not state): Argonne "Nvidia A100 GPU" = A100 40GB
SXM (ALCF Polaris), "Nvidia H100 GPU" = H100 SXM; Splitwise a100-80gb = A100 80GB SXM
(DGX-A100), h100-80gb = H100 SXM (DGX-H100); the power-capped H100 rows are left out.

`fit_overheads(runtime, rows)`: one per-iteration constant per engine family (ms), the
median over the rows of (measured - predicted kernels) / iterations, >= 0. Fit it on
development rows only (never on the rows it is scored on).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError, ServecastError
from servecast.predictors.step_time import configs

ARGONNE_GPU = {"Nvidia A100 GPU": "a100-40gb-sxm", "Nvidia H100 GPU": "h100-sxm"}
SPLITWISE_GPU = {"a100-80gb": "a100-80gb-sxm", "h100-80gb": "h100-sxm"}
SPLITWISE_MODEL = {"llama2-70b": "llama-2-70b", "bloom-176b": "bloom-176b"}
#: columns of a serving frame
COLUMNS = ["source", "engine", "model", "config", "gpu", "num_gpus", "batch_size",
           "prompt_tokens", "output_tokens", "kind", "measured_ms", "iterations"]
KINDS = ("batch", "prompt", "token")


def _config(name: str) -> str | None:
    try:
        return configs.load_config(name).name
    except ServecastError:
        return None


def serving_frame(store) -> pl.DataFrame:
    """The Argonne vLLM and Splitwise rows of the store (see the module docstring); an
    empty frame with COLUMNS when neither is ingested."""
    shipped = {configs.load_config(n).name for n in configs.shipped()}
    argonne = store.sql("SELECT * FROM serving_latencies WHERE source = 'llm-inference-bench' "
                        "AND engine = 'vllm'")
    argonne = argonne.filter(pl.col("device").is_in(list(ARGONNE_GPU))).with_columns(
        gpu=pl.col("device").replace_strict(ARGONNE_GPU, return_dtype=pl.Utf8),
        config=pl.col("model").map_elements(_config, return_dtype=pl.Utf8))
    argonne = argonne.filter(pl.col("config").is_in(list(shipped))).with_columns(
        kind=pl.lit("batch"), measured_ms=pl.col("latency_ms"),
        iterations=pl.col("output_tokens"))
    split = store.sql("SELECT * FROM serving_latencies WHERE source = 'splitwise-perf' "
                      "AND device IN ('a100-80gb', 'h100-80gb')")
    split = split.group_by(["source", "engine", "model", "device", "num_gpus", "batch_size",
                            "prompt_tokens", "output_tokens"]).agg(
        pl.col("prompt_ms", "token_ms").median())
    split = split.with_columns(
        gpu=pl.col("device").replace_strict(SPLITWISE_GPU, return_dtype=pl.Utf8),
        config=pl.col("model").replace_strict(SPLITWISE_MODEL, return_dtype=pl.Utf8),
        iterations=pl.lit(1))
    parts = [argonne]
    for kind in ("prompt", "token"):
        parts.append(split.with_columns(kind=pl.lit(kind), measured_ms=pl.col(f"{kind}_ms")))
    cast = {"num_gpus": pl.Int64, "batch_size": pl.Int64, "prompt_tokens": pl.Int64,
            "output_tokens": pl.Int64, "iterations": pl.Int64, "measured_ms": pl.Float64}
    return pl.concat([p.select(COLUMNS).cast(cast) for p in parts]).sort(COLUMNS[:9])


def batch_ms(engine, batch: int, length: int, output: int | None = None) -> float:
    """Static batch: one prefill step of `batch` prompts of `length` tokens, then
    `output` - 1 decode steps (output default: `length`)."""
    output = length if output is None else output
    t = engine.step_ms([length] * batch, None, [])
    for i in range(1, output):
        t += engine.step_ms([], None, [length + i] * batch)
    return t


def row_ms(engine, kind: str, batch: int, prompt: int, output: int) -> float:
    """Predicted ms of one serving row (see the module docstring) by a compiled
    `EngineStep`; its own overhead is added per iteration."""
    if kind == "batch":
        return batch_ms(engine, batch, prompt, output)
    if kind == "prompt":
        return engine.step_ms([prompt] * batch, None, [])
    if kind == "token":
        return engine.step_ms([], None, [prompt + output // 2] * batch)
    raise InvalidInputError(f"unknown serving row kind {kind!r}; known: {', '.join(KINDS)}")


def predict(runtime, rows: pl.DataFrame, overhead_ms: float | None = 0.0) -> np.ndarray:
    """Predicted ms per row (NaN where the configuration is refused, e.g. it does not fit
    the GPU); `overhead_ms` per iteration (None: the overhead the runtime fitted for the
    row's engine family)."""
    out = np.full(rows.height, np.nan)
    for i, r in enumerate(rows.iter_rows(named=True)):
        oh = runtime.engine_overhead(r["engine"]) if overhead_ms is None else overhead_ms
        try:
            e = runtime.engine(r["config"], r["gpu"], int(r["num_gpus"]), overhead_ms=oh)
            out[i] = row_ms(e, r["kind"], r["batch_size"], r["prompt_tokens"],
                            r["output_tokens"])
        except ServecastError:
            pass
    return out


def fit_overheads(runtime, rows: pl.DataFrame) -> dict[str, float]:
    """Engine family -> per-iteration overhead (ms): median of (measured - kernels) /
    iterations over `rows` (the kernels predicted without overhead), at least 0."""
    if rows.is_empty():
        return {}
    kernels = predict(runtime, rows, 0.0)
    gap = (rows["measured_ms"].to_numpy() - kernels) / rows["iterations"].to_numpy()
    frame = pl.DataFrame({"engine": rows["engine"], "gap": gap}).drop_nans()
    per = frame.group_by("engine").agg(pl.col("gap").median())
    return {e: max(0.0, float(g)) for e, g in sorted(per.iter_rows())}
