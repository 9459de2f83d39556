"""Vidur (MLSys'24) per-operator profiles of the MLP side of LLMs:
`<gpu>/<org>/<model>/mlp.csv` with `time_stats.<op>.{min,max,mean,median,std}` (ms) per
num_tokens and num_tensor_parallel_workers, plus the model config columns. One row per
(op, num_tokens, tp) lands in `kernel_latencies` with latency_ms = median, std, and the
model config and min/max/mean in `extra`."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import file_counts, read_header, reject_invalid, stage_csv
from servecast.errors import DataFileError, SchemaMismatchError

CONFIG = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp",
          "num_tokens", "num_tensor_parallel_workers"]
STATS = ["min", "max", "mean", "median", "std"]


class VidurMLP(Adapter):
    name = "vidur-mlp"
    table = "kernel_latencies"
    patterns = ("mlp.csv", "mlp.csv.gz")
    per_file_traces = False
    catalog = Catalog(
        format="<gpu>/<org>/<model>/mlp.csv: time_stats.<op>.{min,max,mean,median,std} (ms), "
        + ",".join(CONFIG),
        url="https://github.com/microsoft/vidur/tree/main/data/profiling/compute",
        license="MIT",
        citation="Agrawal et al., Vidur: A Large-Scale Simulation Framework for LLM Inference, "
        "MLSys 2024",
    )

    def load(self, ctx, files: list[Path]):
        return {f: self._load_file(ctx, f) for f in files}

    def _load_file(self, ctx, path: Path) -> tuple[int, int]:
        header = read_header(path)
        ops = sorted({h.split(".")[1] for h in header if h.startswith("time_stats.")})
        missing = [c for c in CONFIG if c not in header]
        if missing or not ops:
            raise SchemaMismatchError(str(path), ["time_stats.<op>.<stat>...", *CONFIG], header,
                                      "Vidur mlp.csv profiles")
        parts = path.parts
        if len(parts) < 4:
            raise DataFileError(f"{path}: expected the layout <gpu>/<org>/<model>/mlp.csv")
        device, model = parts[-4], f"{parts[-3]}/{parts[-2]}"
        columns = [(h, h, "BOOLEAN" if h == "use_gated_mlp" else "DOUBLE") for h in header]
        stage_csv(ctx, [path], columns, table="_wide")
        medians = [f'"time_stats.{op}.median"' for op in ops if f"time_stats.{op}.median" in header]
        reject_invalid(ctx, "_wide", [
            ("num_tokens IS NULL OR num_tokens <= 0", "missing or non-positive num_tokens"),
            ("num_tensor_parallel_workers IS NULL OR num_tensor_parallel_workers <= 0",
             "missing or non-positive num_tensor_parallel_workers"),
            (f"least({', '.join(medians)}) < 0", "negative latency"),
        ])
        selects = []
        for op in ops:
            stat = {s: f'"time_stats.{op}.{s}"' if f"time_stats.{op}.{s}" in header else "NULL"
                    for s in STATS}
            config = ", ".join(f"'{c}', {c}" for c in CONFIG[:6])
            selects.append(
                f"""SELECT '{op}' AS op, num_tokens::BIGINT AS num_tokens,
                    num_tensor_parallel_workers::INTEGER AS tp, {stat['median']} AS latency_ms,
                    {stat['std']} AS latency_std_ms,
                    json_object({config}, 'min', {stat['min']}, 'max', {stat['max']},
                                'mean', {stat['mean']}) AS extra, filename FROM _wide""")
        ctx.con.execute("CREATE OR REPLACE TEMP TABLE _stage AS " + " UNION ALL ".join(selects))
        counts = file_counts(ctx, "_wide", [path])[path]
        # an op a row did not profile (empty median) is no measurement: not stored
        ctx.con.execute("DELETE FROM _stage WHERE latency_ms IS NULL")
        ctx.con.execute(
            """INSERT INTO kernel_latencies (trace, source, device, op, model, num_tokens, tp,
               latency_ms, latency_std_ms, extra)
               SELECT ?, 'vidur', ?, op, ?, num_tokens, tp, latency_ms, latency_std_ms, extra
               FROM _stage""", [ctx.trace, device, model])
        return counts
