"""NVIDIA aiconfigurator: operator latencies (ms) measured inside an engine
(`<engine>/<gpu>/<version>/<table>.parquet`) -> `kernel_latencies`, and the system spec sheets
(`systems/<gpu>.yaml`) -> `devices`.

Ops and their columns in `kernel_latencies` (device = the `<gpu>` folder, e.g. `h100_sxm`,
the name the matching `systems/*.yaml` gets in `devices`; engine / engine_version from the
table's framework and version columns):
- `gemm` (gemm_perf): M = m tokens, N = n, K = k; dtype = gemm_dtype (bfloat16, fp8, ...).
- `attn_prefill` (context_attention_perf) and `attn_decode` (generation_attention_perf):
  B = batch_size, M = isl (new tokens per sequence), N = step (the table's step column; in
  decode, tokens already in the KV cache), H = query heads, kv_heads, head_dim; dtype =
  attn_dtype, kv_dtype = kv_cache_dtype.
- `allreduce` (custom_allreduce_perf): tp = num_gpus, N = message_size (elements); dtype.
Kernel source, beam width, window size, backend and the GPU's reported name stay in `extra`.
`*.collection_meta.yaml` and `LICENSE` files are provenance: checked and listed in the
manifest with 0 rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.neusight import upsert_device
from servecast.datasets.staging import file_counts, reject_invalid
from servecast.errors import DataFileError, SchemaMismatchError

ATTN = ["framework", "version", "device", "kernel_source", "batch_size", "isl", "num_heads",
        "num_key_value_heads", "head_dim", "beam_width", "attn_dtype", "kv_cache_dtype", "step",
        "latency"]
#: table -> (op, required columns, canonical column <- SQL over the parquet columns)
TABLES: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "gemm_perf": ("gemm", ["framework", "version", "device", "kernel_source", "gemm_dtype", "m",
                           "n", "k", "latency"],
                  {"M": "m", "N": "n", "K": "k", "dtype": "gemm_dtype"}),
    "custom_allreduce_perf": ("allreduce", ["framework", "version", "device", "kernel_source",
                                            "allreduce_dtype", "num_gpus", "message_size",
                                            "latency"],
                              {"tp": "num_gpus", "N": "message_size", "dtype": "allreduce_dtype"}),
}
_ATTN_MAP = {"B": "batch_size", "M": "isl", "N": "step", "H": "num_heads",
             "kv_heads": "num_key_value_heads", "head_dim": "head_dim", "dtype": "attn_dtype",
             "kv_dtype": "kv_cache_dtype"}
TABLES["context_attention_perf"] = ("attn_prefill", ATTN, _ATTN_MAP)
TABLES["generation_attention_perf"] = ("attn_decode", ATTN, _ATTN_MAP)
#: columns kept in `extra` when the table has them
EXTRA = ["kernel_source", "beam_width", "window_size", "backend", "device"]


class AIConfigurator(Adapter):
    name = "aiconfigurator"
    table = "kernel_latencies"
    patterns = ("*.parquet", "*.yaml", "LICENSE")
    per_file_traces = False
    catalog = Catalog(
        format="<engine>/<gpu>/<version>/{" + ",".join(TABLES) + "}.parquet (latency ms; "
        "columns as aiconfigurator writes them) [+ .collection_meta.yaml]; systems/<gpu>.yaml: "
        "gpu.mem_bw, mem_capacity, bfloat16_tc_flops, fp8_tc_flops, power; node.intra_node_bw",
        url="https://github.com/ai-dynamo/aiconfigurator/tree/main/src/aiconfigurator/systems",
        license="Apache-2.0",
        citation="NVIDIA aiconfigurator (ai-dynamo/aiconfigurator), operator performance "
        "database and system specs",
    )

    def load(self, ctx, files: list[Path]):
        counts = {}
        for f in files:
            if f.suffix == ".parquet":
                counts[f] = self._load_table(ctx, f)
            elif f.name.endswith(".collection_meta.yaml"):
                counts[f] = (_check_meta(f), 0)
            elif f.suffix == ".yaml":
                counts[f] = (_load_system(ctx, f), 0)
            else:  # LICENSE: provenance only
                counts[f] = (0, 0)
        return counts

    def _load_table(self, ctx, path: Path) -> tuple[int, int]:
        kind = path.name.removesuffix(".parquet")
        if kind not in TABLES:
            raise DataFileError(f"{path}: unknown aiconfigurator table {kind!r}; known tables: "
                                f"{', '.join(TABLES)}")
        if len(path.parts) < 3:
            raise DataFileError(f"{path}: expected the layout <engine>/<gpu>/<version>/"
                                f"{kind}.parquet")
        gpu, collection = path.parts[-3], path.parts[-2]
        op, required, mapping = TABLES[kind]
        con = ctx.con
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE _stage AS SELECT *, ?::VARCHAR AS filename "
                        "FROM read_parquet(?)", [str(path), str(path)])
        except duckdb.Error as e:
            msg = str(e).split("\n")[0]
            raise DataFileError(f"{path}: cannot be read as Parquet ({msg}); download the file "
                                "again") from None
        found = [r[0] for r in con.execute("DESCRIBE _stage").fetchall() if r[0] != "filename"]
        if any(c not in found for c in required):
            raise SchemaMismatchError(str(path), required, found,
                                      f"aiconfigurator {kind} table (see `servecast datasets`)")
        ctx.row_base["_stage"] = dict(con.execute(
            "SELECT filename, min(rowid) FROM _stage GROUP BY 1").fetchall())
        shapes = [c for c in mapping.values() if c not in ("gemm_dtype", "attn_dtype",
                                                           "kv_cache_dtype", "allreduce_dtype")]
        step_ok = ["step"] if "step" in shapes else []
        reject_invalid(ctx, "_stage", [
            ("latency IS NULL OR NOT isfinite(latency) OR latency <= 0",
             "missing or non-positive latency"),
            *[(f"{c} IS NULL OR {c} <= 0", f"missing or non-positive {c}")
              for c in shapes if c not in step_ok],
            *[(f"{c} IS NULL OR {c} < 0", f"missing or negative {c}") for c in step_ok],
        ], header_lines=0)
        extra = ", ".join(f"'{'device_name' if c == 'device' else c}', {c}"
                          for c in EXTRA if c in found)
        cols = list(mapping)
        con.execute(
            f"""INSERT INTO kernel_latencies (trace, source, device, op, {', '.join(cols)},
                engine, engine_version, latency_ms, extra)
                SELECT ?, 'aiconfigurator', ?, ?, {', '.join(mapping.values())},
                       lower(framework), version, latency,
                       json_object({extra}, 'collection', ?) FROM _stage""",
            [ctx.trace, gpu, op, collection])
        return file_counts(ctx, "_stage", [path])[path]


def _check_meta(path: Path) -> int:
    """A collection's provenance file: must name its runtime framework; 0 rows."""
    from servecast.gpus import read_yaml

    runtime = read_yaml(path).get("runtime")
    if not isinstance(runtime, dict) or "framework" not in runtime:
        raise DataFileError(f"{path}: collection meta lacks runtime.framework; expected an "
                            "aiconfigurator <table>.collection_meta.yaml")
    return 0


def _load_system(ctx, path: Path) -> int:
    """One `systems/<gpu>.yaml` -> a `devices` row named after the file (the keys the YAML has;
    the NeuSight keys it lacks, such as Num_Sm, stay NULL). Returns rows added."""
    from servecast.gpus import read_yaml, spec_from_yaml

    spec = spec_from_yaml(path, fill=False)
    doc = read_yaml(path)
    spec["Device"] = path.stem
    return upsert_device(ctx, {**spec, "system": {"gpu": doc.get("gpu"),
                                                   "node": doc.get("node")}}, "aiconfigurator")
