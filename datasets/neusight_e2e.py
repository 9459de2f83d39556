"""NeuSight (ASPLOS'25) whole-model measured latency -> `serving_latencies` (ms).

Layout (NeuSight's `scripts/asplos/{label,results/opgraph,data/DLmodel_configs}`):
- `label/<GPU>/<model>-<mode>-<seq>-<batch>[-<parallel>][-fusion].json`: `num_layer`,
  `e2e_latency`, `fw_latency`, `bwall_latency` (ms); mode `inf` | `train`; parallel `dp4`,
  `tp4`, `pp4_1` (4 GPUs); `-fusion`: run with fused kernels. One row each: model, device =
  the GPU folder, num_gpus, engine `pytorch`, batch_size, prompt_tokens = seq, latency_ms =
  e2e_latency, prompt_ms = fw_latency (the forward pass of the batch; NULL where NeuSight
  wrote 0), and in `extra`: run (the file stem), mode, parallel, fusion, num_layer,
  bw_latency_ms, the traced ops of the sibling `.csv` (count and sum of their forward
  latencies), the op-graph file of the same run and the model config's sizes.
- `label/<GPU>/<run>.csv`: per-op traces of a run (op, target, ..., fw_latency, ...,
  Name) -> `kernel_latencies`, one row per traced node: device, op = the node's target,
  model, latency_ms = fw_latency (0 for bookkeeping nodes), the node's kind, name, shapes
  and dtype in `extra`.
- `opgraph/<run>.csv` (Name, OpName, FwOps, BwOps, AccOps, Prev, Next, InputShapes,
  OutputShape) -> `op_graphs`, one row per node.
- `model_configs/*.json` (Hugging Face configs): their sizes go into the label rows'
  `extra`; 0 rows of their own.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.errors import DataFileError

#: label file name: model, mode, sequence length, batch, optional parallelism
LABEL = re.compile(r"^(?P<model>[A-Za-z0-9_.]+)-(?P<mode>inf|train)-(?P<seq>\d+)-"
                   r"(?P<batch>\d+)(?:-(?P<par>(?:dp|tp|pp)(?P<gpus>\d+)(?:_\d+)?))?"
                   r"(?P<fusion>-fusion)?$")
KEYS = ("e2e_latency", "fw_latency", "bwall_latency", "num_layer")
#: config keys (Hugging Face names of several families) -> extra's names
SIZES = {"hidden": ("hidden_size", "n_embd", "d_model"),
         "layers": ("num_hidden_layers", "n_layer", "num_layers"),
         "heads": ("num_attention_heads", "n_head", "num_heads"), "vocab": ("vocab_size",)}


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise DataFileError(f"{path}: expected a JSON object")
    return doc


#: columns a per-op trace / an op graph CSV must have
TRACE_COLS = ("op", "target", "input_shapes", "output_shape", "dtype", "fw_latency",
              "bw_latency", "Name")
GRAPH_COLS = ("Name", "OpName", "FwOps", "BwOps", "InputShapes", "OutputShape")


def _records(path: Path, need: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line, record) of a CSV with the `need` columns; DataFileError naming the file."""
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in need if c not in (reader.fieldnames or [])]
            if missing:
                raise DataFileError(f"{path}: line 1: header lacks {', '.join(missing)}; "
                                    f"expected the columns {', '.join(need)}")
            return [(reader.line_num, rec) for rec in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataFileError(f"{path}: not a readable CSV ({e})") from None


def _ms(path: Path, line: int, value: str | None, key: str) -> float:
    try:
        v = float(value or 0.0)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise DataFileError(f"{path}: line {line}: {key}={value!r} is not a number >= 0")
    return v


def _run(path: Path) -> re.Match:
    """The LABEL match of a run file's stem; DataFileError naming the file otherwise."""
    m = LABEL.match(path.stem)
    if not m:
        raise DataFileError(f"{path}: file name not <model>-<inf|train>-<seq>-<batch>"
                            f"[-<dp|tp|pp>N][-fusion]{path.suffix} (e.g. "
                            f"gpt2_large-inf-1024-4{path.suffix})")
    return m


def trace_rows(path: Path) -> list[dict]:
    """`kernel_latencies` rows of a per-op trace CSV (see the module docstring)."""
    run = _run(path)
    out = []
    for line, r in _records(path, TRACE_COLS):
        extra = {"run": path.stem, "node": r["Name"], "kind": r["op"],
                 "input_shapes": r["input_shapes"], "output_shape": r["output_shape"],
                 "dtype": r["dtype"], "bw_latency_ms": _ms(path, line, r["bw_latency"],
                                                           "bw_latency")}
        out.append({"device": path.parent.name, "op": r["target"] or r["Name"],
                    "model": run["model"],
                    "latency_ms": _ms(path, line, r["fw_latency"], "fw_latency"),
                    "extra": json.dumps(extra)})
    return out


def graph_rows(path: Path) -> list[dict]:
    """`op_graphs` rows of an op-graph CSV (one per node)."""
    run = _run(path)
    return [{"model": run["model"], "run": path.stem, "name": r["Name"], "op_name": r["OpName"],
             "fw_ops": r["FwOps"], "bw_ops": r["BwOps"], "input_shapes": r["InputShapes"],
             "output_shape": r["OutputShape"]} for _line, r in _records(path, GRAPH_COLS)]


def _sizes(config: dict) -> dict:
    out = {}
    for key, names in SIZES.items():
        for name in names:
            if isinstance(config.get(name), int):
                out[key] = config[name]
                break
    return out


def label_row(path: Path, configs: dict[str, dict], traces: dict[str, list[dict]],
              graphs: dict[str, Path]) -> dict:
    """One `serving_latencies` row (ROW keys) of a label JSON; DataFileError naming the file
    and the problem."""
    m = _run(path)
    doc = _json(path)
    missing = [k for k in KEYS if k not in doc]
    if missing:
        raise DataFileError(f"{path}: lacks {', '.join(missing)}; expected keys "
                            f"{', '.join(KEYS)} (ms)")
    for k in KEYS:  # only e2e_latency is always given (NeuSight writes null for the others)
        v = doc[k]
        if (v is not None or k == "e2e_latency") and (
                not isinstance(v, int | float) or isinstance(v, bool) or v < 0):
            raise DataFileError(f"{path}: {k}={v!r} must be a number >= 0")
    if not doc["e2e_latency"] > 0:
        raise DataFileError(f"{path}: e2e_latency={doc['e2e_latency']!r} must be > 0")
    model, stem = m["model"], path.stem
    graph = graphs.get(stem)
    ops = traces.get(str(path.with_suffix(".csv")))
    extra = {"run": stem, "mode": m["mode"], "parallel": m["par"], "fusion": bool(m["fusion"]),
             "num_layer": doc["num_layer"], "bw_latency_ms": doc["bwall_latency"],
             "traced_ops": len(ops) if ops is not None else None,
             "traced_fw_ms": sum(o["latency_ms"] for o in ops) if ops is not None else None,
             "opgraph": graph.name if graph else None, **_sizes(configs.get(model, {}))}
    return {"model": model, "device": path.parent.name,
            "num_gpus": int(m["gpus"]) if m["gpus"] else 1, "batch_size": int(m["batch"]),
            "prompt_tokens": int(m["seq"]), "latency_ms": float(doc["e2e_latency"]),
            "prompt_ms": float(doc["fw_latency"] or 0.0) or None, "extra": json.dumps(extra)}


class NeuSightE2E(Adapter):
    name = "neusight-e2e"
    table = "serving_latencies"
    patterns = ("*.json", "*.csv")
    per_file_traces = False
    catalog = Catalog(
        format="label/<GPU>/<model>-<inf|train>-<seq>-<batch>[-<dp|tp|pp>4][-fusion].json: "
        + ",".join(KEYS) + " (ms) [+ per-op trace .csv]; opgraph/*.csv; model_configs/*.json",
        url="https://github.com/sitar-lab/NeuSight/tree/main/scripts/asplos",
        license="MIT",
        citation="Lee et al., Forecasting GPU Performance for Deep Learning Training and "
        "Inference (NeuSight), ASPLOS 2025",
    )

    def load(self, ctx, files: list[Path]):
        import polars as pl

        labels = [f for f in files if f.suffix == ".json" and f.parent.parent.name == "label"]
        configs = {f.stem: _json(f) for f in files
                   if f.suffix == ".json" and f.parent.name == "model_configs"}
        graphs = {f.stem: f for f in files if f.suffix == ".csv" and f.parent.name == "opgraph"}
        traces = {str(f): trace_rows(f) for f in files
                  if f.suffix == ".csv" and f.parent.parent.name == "label"}
        nodes = {f: graph_rows(f) for f in graphs.values()}
        other = [f for f in files if f.suffix == ".csv" and str(f) not in traces
                 and f not in nodes]
        if other:
            raise DataFileError(f"{other[0]}: a CSV outside label/<GPU>/ and opgraph/; expected "
                                f"{self.catalog.format}")
        rows = [label_row(f, configs, traces, graphs) for f in labels]
        tables = {"serving_latencies": (rows, {"engine": "pytorch"}),
                  "kernel_latencies": ([r for t in traces.values() for r in t], {}),
                  "op_graphs": ([r for g in nodes.values() for r in g], {})}
        for table, (data, const) in tables.items():
            if not data:
                continue
            frame = pl.DataFrame(data, infer_schema_length=None)
            ctx.con.register("_ne2e", frame.to_arrow())
            cols = ", ".join([*frame.columns, *const])
            consts = "".join(f", '{v}'" for v in const.values())
            src = ", ? AS source" if table != "op_graphs" else ""
            ctx.con.execute(
                f"INSERT INTO {table} (trace{', source' if src else ''}, {cols}) "
                f"SELECT ?{src}, {', '.join(frame.columns)}{consts} FROM _ne2e",
                [ctx.trace, self.name] if src else [ctx.trace])
            ctx.con.unregister("_ne2e")
        counts = {f: (0, 0) for f in files}
        counts |= {f: (1, 0) for f in labels}
        counts |= {Path(f): (len(t), 0) for f, t in traces.items()}
        counts |= {f: (len(g), 0) for f, g in nodes.items()}
        return counts
