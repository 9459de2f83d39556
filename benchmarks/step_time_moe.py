"""MoE step time against measured static batches: Argonne LLM-Inference-Bench's Mixtral-8x7B
rows (vLLM on the A100, TensorRT-LLM on the A100 and H100; TP 4) beside the dense rows of the
same engine and GPU as the control (Llama-2-70B at the same TP, and every dense model).
Predicted batch latency = the prefill step of B prompts + every decode step up to the output
length (`serving.batch_ms`), with no engine overhead, by the physics-only step time (what the
MLPerf protocol runs) and by the learned model (operator residuals; `--models` a saved
`step_time` model, else one trained here on the store's operator tables).

Prints, per engine x GPU x model: rows, `under_floor` (rows whose measured ms per output token
is below the time to stream the bf16 weights a decode step of that batch reads,
`serving.weight_floor_ms`: measured with another weight format, or not what the row says;
every row is shown here, `serving.not_bf16`'s rule not applied), MdAPE (%)
and the signed median error (%, predicted / measured - 1) for both; then Mixtral's signed
median over the control's (`vs control`, %: the part of the MoE error a per-engine efficiency
factor cannot absorb) and the signed median error per batch size (where in the batch range the
MoE layer is off).

    .venv/bin/python benchmarks/step_time_moe.py [--db FILE] [--models DIR] [--trees 150]

Development data for the MoE layer of `predictors/step_time/runtime.py` (issue 24).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_latency_logo import open_store  # noqa: E402

ENGINES = ("vllm", "trtllm")
CONTROL = "llama-2-70b"


def score(part: pl.DataFrame, col: str) -> tuple[float, float]:
    """(MdAPE %, signed median %) of `col` against measured_ms (NaN rows dropped)."""
    ok = part.filter(pl.col(col).is_not_nan())
    if ok.is_empty():
        return np.nan, np.nan
    rel = ok[col].to_numpy() / ok["measured_ms"].to_numpy() - 1.0
    return float(np.median(np.abs(rel)) * 100), float(np.median(rel) * 100)


def main() -> None:
    from servecast.predictors.operator_latency.data import operator_frame
    from servecast.predictors.step_time import configs, serving
    from servecast.predictors.step_time.model import StepTimeModel
    from servecast.predictors.step_time.runtime import Runtime

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db")
    ap.add_argument("--models", help="a saved step_time model (default: train one here)")
    ap.add_argument("--trees", type=int, default=150)
    args = ap.parse_args()
    adapters = [("llm-inference-bench", "serving/llm_inference_bench", "llm_inference_bench")]
    if not args.models:
        adapters.insert(0, ("aiconfigurator", "gpu/aiconfigurator", "aiconfigurator"))
    store = open_store(args.db, adapters)
    t0 = time.time()
    rows = serving.serving_frame(store, ENGINES, bf16_only=False).filter(
        pl.col("source") == "llm-inference-bench")
    moe = {c for c in rows["config"].unique().to_list() if configs.load_config(c).experts > 1}
    cells = rows.filter(pl.col("config").is_in(list(moe))).select(
        "engine", "gpu", "num_gpus").unique()
    rows = rows.join(cells.select("engine", "gpu").unique(), on=["engine", "gpu"])
    learned = Runtime.load(args.models) if args.models else \
        StepTimeModel(trees=args.trees).fit(operator_frame(store)).runtime()
    rows = rows.with_columns(serving.under_floor(rows))
    rows = rows.with_columns(physics=serving.predict(Runtime({}, []), rows),
                             learned=serving.predict(learned, rows))
    print(f"{rows.height} rows predicted in {time.time() - t0:.0f} s")
    out = []
    for (engine, gpu), part in rows.group_by(["engine", "gpu"], maintain_order=True):
        tps = cells.filter((pl.col("engine") == engine) & (pl.col("gpu") == gpu))["num_gpus"]
        groups = {}
        for c in sorted(moe):
            groups[c] = part.filter(pl.col("config") == c)
            groups[f"{c} (not under_floor)"] = groups[c].filter(~pl.col("under_floor"))
        groups[f"{CONTROL} (control)"] = part.filter(
            (pl.col("config") == CONTROL) & pl.col("num_gpus").is_in(tps.to_list()))
        groups["dense (all)"] = part.filter(~pl.col("config").is_in(list(moe)))
        signed = {}
        for name, g in groups.items():
            row = {"engine": engine, "gpu": gpu, "model": name, "rows": g.height,
                   "under_floor": int(g["under_floor"].sum())}
            for col in ("physics", "learned"):
                row[col], row[col + "_signed"] = score(g, col)
                signed[(name, col)] = row[col + "_signed"]
            out.append(row)
        for name in sorted(moe):
            out.append({"engine": engine, "gpu": gpu, "model": f"{name} vs control",
                        "rows": groups[name].height} | {
                col + "_signed": ((1 + signed[(name, col)] / 100)
                                  / (1 + signed[(f"{CONTROL} (control)", col)] / 100) - 1) * 100
                for col in ("physics", "learned")})
    with pl.Config(tbl_rows=60, tbl_cols=12, fmt_str_lengths=40, float_precision=1,
                   tbl_width_chars=200):
        print(pl.DataFrame(out))
        by_batch = rows.filter(pl.col("config").is_in([*moe, CONTROL])).with_columns(
            physics=(pl.col("physics") / pl.col("measured_ms") - 1) * 100,
            learned=(pl.col("learned") / pl.col("measured_ms") - 1) * 100).group_by(
            "engine", "gpu", "config", "batch_size").agg(
            pl.col("physics", "learned").median()).sort("engine", "gpu", "config",
                                                         "batch_size")
        print("signed median error (%) per batch size")
        print(by_batch)


if __name__ == "__main__":
    main()
