"""Measured LLM serving latencies -> `serving_latencies` (ms):

- `llm-inference-bench` (Argonne LLM-Inference-Bench, `all_results.csv`): static batches of
  `Batch Size` prompts of `Input Output Length` tokens generating as many, per Hardware x
  `Num of Hardware` x Framework x Model; latency_ms = Latency (s per batch) x 1000,
  throughput_tps = Throughput (tokens/s).
- `splitwise-perf` (Splitwise `perf_model.csv`): prompt_ms = prompt_time (the prefill of the
  batch), token_ms = token_time (one decode step), latency_ms = e2e_time, per model x hardware
  x tensor_parallel x prompt / batch / token sizes; power in `extra`.
A `LICENSE` file next to the data is provenance: listed in the manifest with 0 rows.
"""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import file_counts, reject_invalid, stage_csv

ARGONNE = [("Hardware", "hardware", "VARCHAR"), ("Num of Hardware", "num_gpus", "INTEGER"),
           ("Framework", "framework", "VARCHAR"), ("Model", "model", "VARCHAR"),
           ("Input Output Length", "io_len", "BIGINT"), ("Batch Size", "batch_size", "BIGINT"),
           ("Latency", "latency_s", "DOUBLE"), ("Throughput", "throughput", "DOUBLE")]
SPLITWISE = [("model", "model", "VARCHAR"), ("hardware", "hardware", "VARCHAR"),
             ("prompt_size", "prompt_size", "BIGINT"), ("batch_size", "batch_size", "BIGINT"),
             ("token_size", "token_size", "BIGINT"), ("peak_power", "peak_power", "DOUBLE"),
             ("average_power", "average_power", "DOUBLE"), ("prompt_time", "prompt_time", "DOUBLE"),
             ("token_time", "token_time", "DOUBLE"), ("e2e_time", "e2e_time", "DOUBLE"),
             ("tensor_parallel", "tp", "INTEGER")]


class _ServingCSV(Adapter):
    """One CSV layout (`columns`) + an INSERT select; LICENSE files count 0 rows."""

    table = "serving_latencies"
    patterns = ("*.csv", "LICENSE")
    per_file_traces = False
    columns: list = []
    checks: list = []
    select = ""

    def load(self, ctx, files: list[Path]):
        counts = {f: (0, 0) for f in files if f.name == "LICENSE"}
        data = [f for f in files if f.name != "LICENSE"]
        if not data:
            return counts
        stage_csv(ctx, data, self.columns)
        reject_invalid(ctx, "_stage", self.checks)
        counts |= file_counts(ctx, "_stage", data)
        ctx.con.execute(
            f"""INSERT INTO serving_latencies (trace, source, model, device, num_gpus, engine,
                batch_size, prompt_tokens, output_tokens, latency_ms, prompt_ms, token_ms,
                throughput_tps, extra) SELECT ?, ?, {self.select} FROM _stage""",
            [ctx.trace, self.name])
        return counts


def _positive(cols: list[str]) -> list[tuple[str, str]]:
    return [(f"{c} IS NULL OR {c} <= 0", f"missing or non-positive {c}") for c in cols]


class LLMInferenceBench(_ServingCSV):
    name = "llm-inference-bench"
    columns = ARGONNE
    checks = [("hardware IS NULL OR model IS NULL OR framework IS NULL",
               "missing Hardware, Model or Framework"),
              *_positive(["num_gpus", "io_len", "batch_size", "latency_s"])]
    select = """model, hardware, num_gpus, lower(framework), batch_size, io_len, io_len,
                latency_s * 1000, NULL, NULL, throughput, NULL"""
    catalog = Catalog(
        format="CSV: " + ",".join(c[0] for c in ARGONNE) + " (Latency s per batch)",
        url="https://github.com/argonne-lcf/LLM-Inference-Bench/tree/main/Plots",
        license="BSD-3-Clause",
        citation="Chitty-Venkata et al., LLM-Inference-Bench: Inference Benchmarking of Large "
        "Language Models on AI Accelerators, SC'24 workshops (Argonne)",
    )


class SplitwisePerf(_ServingCSV):
    name = "splitwise-perf"
    columns = SPLITWISE
    checks = [("model IS NULL OR hardware IS NULL", "missing model or hardware"),
              *_positive(["prompt_size", "batch_size", "token_size", "prompt_time",
                          "token_time", "e2e_time", "tp"])]
    select = """model, hardware, tp, 'splitwise', batch_size, prompt_size, token_size, e2e_time,
                prompt_time, token_time, NULL,
                json_object('peak_power', peak_power, 'average_power', average_power)"""
    catalog = Catalog(
        format="CSV: " + ",".join(c[0] for c in SPLITWISE) + " (times in ms)",
        url="https://github.com/Mutinifni/splitwise-sim/tree/main/data",
        license="MIT",
        citation="Patel et al., Splitwise: Efficient Generative LLM Inference Using Phase "
        "Splitting, ISCA 2024",
        download="https://raw.githubusercontent.com/Mutinifni/splitwise-sim/main/data/"
        "perf_model.csv",
    )
