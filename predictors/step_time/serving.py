"""Measured serving latencies as step-time rows, and the per-engine overhead fitted on them.

`serving_frame(store, engines)` reads the store's `serving_latencies` of Argonne's
LLM-Inference-Bench (static batches of `engines`, vLLM and TensorRT-LLM by default, named
by engine family (`ENGINE_FAMILY`: the store's 'tensorrt-llm' is 'trtllm'): one prefill
step of B prompts, then every decode step up to the output length) and Splitwise's perf model
(prompt time = one prefill step, per-token time = one decode step at the middle of the
output), one row per measurement: `engine` (the engine
family), `config` (a shipped model config), `gpu` (a catalog name), `num_gpus` (TP),
`batch_size`, `prompt_tokens`, `output_tokens`, `kind` (batch | prompt | token),
`measured_ms` and `iterations` (engine iterations the measurement spans).

GPU mapping (an assumption the data does not state): Argonne "Nvidia A100 GPU" = A100 40GB
SXM (ALCF Polaris), "Nvidia H100 GPU" = H100 SXM; Splitwise a100-80gb = A100 80GB SXM
(DGX-A100), h100-80gb = H100 SXM (DGX-H100); the power-capped H100 rows are left out.

Rows not run in bf16 (`not_bf16`, applied by `serving_frame` unless `bf16_only=False`): a
row whose measured ms per iteration is below `weight_floor_ms` (streaming the bf16 weights
one step of that batch reads, at the GPU's datasheet bandwidth) is not a bf16 run of what it
says. Such rows come in two patterns in Argonne's data, and the rule follows them: every row
of a series (one engine, GPU, model, TP, row kind and input length, over the batch sizes)
with a row under the floor is dropped (a run that did not do what the row says: at one
input length only, far under the floor at small batches); and every row of an (engine, GPU,
model, TP) group whose under-floor rows sit at two or more input lengths is dropped (the
engine ran the model in another weight format: its rows just above the floor are too fast
as well).

`fit_overheads(runtime, rows)`: per engine family, the overhead terms of
`runtime.OVERHEAD_TERMS` (ms per iteration, GPU clock cycles per all-reduce ring step, ms per
sequence) that close (measured - predicted kernels), non-negative least squares on the
relative gap; which terms (`TERM_SETS`) is chosen on the rows' own validation split: leave
one (model, TP) group out, lowest mean over the family's row kinds of the validation MdAPE.
Fit it on development rows only (never on the rows it is scored on).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError, ServecastError
from servecast.predictors.step_time import configs
from servecast.predictors.step_time.runtime import OVERHEAD_TERMS, ring_steps

#: the store's engine name (Argonne's Framework, lower-cased) -> the engine family the
#: runtime, the simulator and `--engine` call it (the one place the two names meet)
ENGINE_FAMILY = {"vllm": "vllm", "tensorrt-llm": "trtllm"}
#: engine families `serving_frame` reads from Argonne by default
ENGINES = ("vllm", "trtllm")
ARGONNE_GPU = {"Nvidia A100 GPU": "a100-40gb-sxm", "Nvidia H100 GPU": "h100-sxm"}
SPLITWISE_GPU = {"a100-80gb": "a100-80gb-sxm", "h100-80gb": "h100-sxm"}
SPLITWISE_MODEL = {"llama2-70b": "llama-2-70b", "bloom-176b": "bloom-176b"}
#: columns of a serving frame
COLUMNS = ["source", "engine", "model", "config", "gpu", "num_gpus", "batch_size",
           "prompt_tokens", "output_tokens", "kind", "measured_ms", "iterations"]
KINDS = ("batch", "prompt", "token")
#: overhead term sets `fit_overheads` chooses among (the per-iteration constant always)
TERM_SETS = (("step_ms",), ("step_ms", "ring_cycles"), ("step_ms", "seq_ms"), OVERHEAD_TERMS)


def _config(name: str) -> str | None:
    try:
        return configs.load_config(name).name
    except ServecastError:
        return None


def serving_frame(store, engines: tuple[str, ...] = ENGINES, bf16_only: bool = True
                  ) -> pl.DataFrame:
    """The Argonne rows of `engines` (engine families, `ENGINE_FAMILY`'s values) and the
    Splitwise rows of the store (see the module docstring), without the rows `not_bf16`
    excludes when `bf16_only`; an empty frame with COLUMNS when neither is ingested.
    InvalidInputError on an unknown engine family."""
    unknown = set(engines) - set(ENGINE_FAMILY.values())
    if unknown:
        raise InvalidInputError(f"no Argonne rows for engine family {', '.join(sorted(unknown))};"
                                f" known: {', '.join(ENGINE_FAMILY.values())}")
    shipped = {configs.load_config(n).name for n in configs.shipped()}
    argonne = store.sql("SELECT * FROM serving_latencies WHERE source = 'llm-inference-bench'")
    stored = [k for k, v in ENGINE_FAMILY.items() if v in engines]
    argonne = argonne.filter(pl.col("device").is_in(list(ARGONNE_GPU))
                             & pl.col("engine").is_in(stored)).with_columns(
        engine=pl.col("engine").replace_strict(ENGINE_FAMILY, return_dtype=pl.Utf8),
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
    rows = pl.concat([p.select(COLUMNS).cast(cast) for p in parts]).sort(COLUMNS[:9])
    return rows.filter(~not_bf16(rows)) if bf16_only else rows


def weight_floor_ms(config: str, gpu: str, tp: int, batch: int) -> float:
    """ms one step of `batch` sequences needs at least to stream its bf16 weights from
    memory on one GPU: every weight but the experts', plus each expert's times the chance a
    uniform top-k routing of `batch` tokens uses it, over the GPU's bandwidth."""
    from servecast import gpus

    cfg = configs.load_config(config)
    expert = (3 if cfg.gated_mlp else 2) * cfg.hidden * cfg.intermediate * cfg.layers
    used = 1.0 - (1.0 - cfg.experts_per_token / cfg.experts) ** batch if cfg.experts > 1 \
        else 1.0
    params = cfg.params() - cfg.experts * expert * (1.0 - used)
    return params * 2.0 / tp / (gpus.resolve_spec(gpu)["Mem_Bw"] * 1e9) * 1e3


def under_floor(rows: pl.DataFrame) -> pl.Series:
    """Per row: its measured ms per iteration is below `weight_floor_ms` of its batch."""
    keys = ["config", "gpu", "num_gpus", "batch_size"]
    floors = {k: weight_floor_ms(k[0], k[1], int(k[2]), int(k[3]))
              for k in rows.select(keys).unique().iter_rows()}
    floor = [floors[k] for k in rows.select(keys).iter_rows()]
    return (rows["measured_ms"] / rows["iterations"] < pl.Series(floor)).alias("under_floor")


def not_bf16(rows: pl.DataFrame) -> pl.Series:
    """Per row of a serving frame: excluded by the module docstring's rule (its series
    has a row under the bf16 weight floor, or its (engine, GPU, model, TP) group has such
    rows at two or more input lengths)."""
    if rows.is_empty():
        return pl.Series("not_bf16", [], dtype=pl.Boolean)
    group = ["source", "engine", "gpu", "config", "num_gpus"]
    series = [*group, "kind", "prompt_tokens"]
    flagged = rows.with_columns(under_floor(rows)).with_columns(
        bad_series=pl.col("under_floor").any().over(series),
        bad_group=(pl.col("prompt_tokens").filter(pl.col("under_floor")).n_unique() >= 2
                   ).over(group))
    return (flagged["bad_series"] | flagged["bad_group"]).alias("not_bf16")


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


def predict(runtime, rows: pl.DataFrame, overhead_ms: float | dict | None = 0.0
            ) -> np.ndarray:
    """Predicted ms per row (NaN where the configuration is refused, e.g. it does not fit
    the GPU); `overhead_ms` per iteration (ms, or `OVERHEAD_TERMS`; None: the overhead the
    runtime fitted for the row's engine family)."""
    out = np.full(rows.height, np.nan)
    for i, r in enumerate(rows.iter_rows(named=True)):
        engine = r["engine"] if overhead_ms is None else None
        try:
            e = runtime.engine(r["config"], r["gpu"], int(r["num_gpus"]), overhead_ms=overhead_ms,
                               engine=engine)
            out[i] = row_ms(e, r["kind"], r["batch_size"], r["prompt_tokens"],
                            r["output_tokens"])
        except ServecastError:
            pass
    return out


def overhead_design(rows: pl.DataFrame) -> np.ndarray:
    """(rows, OVERHEAD_TERMS) ms each term adds to a row per unit of its coefficient: the
    row's iterations; its all-reduce ring steps (`runtime.ring_steps`) over the GPU's clock
    (cycles -> ms); its sequence-iterations (batch x iterations)."""
    from servecast import gpus

    freq = {g: gpus.resolve_spec(g)["Freq"] for g in rows["gpu"].unique().to_list()}
    layers = {c: configs.load_config(c).layers for c in rows["config"].unique().to_list()}
    it = rows["iterations"].to_numpy().astype(float)
    ring = np.array([ring_steps(layers[c], int(tp)) / (freq[g] * 1e3) for c, tp, g in
                     zip(rows["config"], rows["num_gpus"], rows["gpu"], strict=True)])
    return np.column_stack([it, it * ring, it * rows["batch_size"].to_numpy()])


def _nnls(design: np.ndarray, gap: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimizing the squared relative error of kernels + design
    @ coef against measured (gap = measured - kernels)."""
    from scipy.optimize import nnls

    coef, _ = nnls(design / measured[:, None], gap / measured)
    return coef


def _validation_mdape(design, gap, measured, groups, kinds) -> float:
    """Mean over `kinds` of the MdAPE (%) of leave-one-group-out predictions (inf with one
    group: nothing to validate on)."""
    if len(set(groups)) < 2:
        return float("inf")
    pred = np.empty_like(gap)
    for g in set(groups):
        m = groups == g
        coef = _nnls(design[~m], gap[~m], measured[~m])
        pred[m] = design[m] @ coef
    ape = np.abs(pred - gap) / measured * 100.0
    return float(np.mean([np.median(ape[kinds == k]) for k in np.unique(kinds)]))


def fit_overheads(runtime, rows: pl.DataFrame) -> tuple[dict[str, dict], dict[str, dict]]:
    """(engine family -> its `OVERHEAD_TERMS`, engine family -> {term set: validation MdAPE
    %}) fitted on `rows` (see the module docstring; the kernels predicted without
    overhead). A family with one (model, TP) group gets the per-iteration constant alone."""
    if rows.is_empty():
        return {}, {}
    kernels = predict(runtime, rows, 0.0)
    keep = ~np.isnan(kernels)
    rows, kernels = rows.filter(pl.Series(keep)), kernels[keep]
    design, measured = overhead_design(rows), rows["measured_ms"].to_numpy()
    gap = measured - kernels
    groups = (rows["config"] + "/" + rows["num_gpus"].cast(pl.Utf8)).to_numpy()
    fitted, scores = {}, {}
    for engine in sorted(rows["engine"].unique().to_list()):
        m = (rows["engine"] == engine).to_numpy()
        kinds = rows["kind"].to_numpy()[m]
        val = {"+".join(ts): _validation_mdape(
            design[m][:, [OVERHEAD_TERMS.index(t) for t in ts]], gap[m], measured[m],
            groups[m], kinds) for ts in TERM_SETS}
        best = min(TERM_SETS, key=lambda ts: val["+".join(ts)])
        cols = [OVERHEAD_TERMS.index(t) for t in best]
        coef = _nnls(design[m][:, cols], gap[m], measured[m])
        fitted[engine] = {t: 0.0 for t in OVERHEAD_TERMS} | {
            t: float(c) for t, c in zip(best, coef, strict=True)}
        scores[engine] = val
    return fitted, scores
