"""NeuSight op graphs (`op_graphs`, from the `neusight-e2e` adapter) as kernel-latency frames.

An op-graph node's `fw_ops` lists NeuSight's kernels of the node's forward pass:
`[['Linear', (M, K, N)]]`, `[['BMM', (B, M, K, N)]]` (C[B,M,N] = A[B,M,K] @ W[B,K,N]),
`[['VEC<op>', (rows, H)]]` (element-wise / norm ops over rows of H elements; op in
`ops.OPS`), `[['MEM', (in, out)]]` (copies, gathers), plus collectives in parallel runs.
`kernel_rows` turns them into rows of the kernel model's frame (op, B, M, N, K, H); kernels
the model has no op for (MEM, collectives, unknown VEC ops) are left out and counted.

Graph coverage (what the sum of a run's nodes means):
- non-fusion graphs (`<run>`) trace ONE transformer layer besides the embeddings and head:
  nodes of layer 0 (`..._h_0_...`, `..._layer_0_...`, `..._layers_0_...`, or unnamed nodes
  between the first and the last layer-0 node) stand for every layer, so they count
  `num_layer` times; the other nodes count once.
- fusion graphs (`<run>-fusion`) cover the whole model; a fused node lists all of its
  kernels, which are summed (fusion saves launches and intermediate traffic, so the sum is
  an upper bound of the fused kernel's time).
"""

from __future__ import annotations

import ast
import re

import polars as pl

from servecast.errors import DataFileError
from servecast.predictors.kernel_latency.ops import OPS, canonical_op

#: a layer-0 node name of the NeuSight models (GPT-2/3 `h_0`, BERT `layer_0`, OPT `layers_0`)
LAYER0 = re.compile(r"(?:^|_)(?:h|layer|layers|block)_0_")
#: NeuSight's GEMM kernel names -> (op, the fw_ops tuple's order of B, M, N, K)
GEMMS = {"Linear": ("linear", ("M", "K", "N")), "BMM": ("bmm", ("B", "M", "K", "N"))}


def kernels(fw_ops: str, where: str = "fw_ops") -> tuple[list[dict], int]:
    """(kernel-model rows {op, B, M, N, K, H}, count of kernels left out) of one `fw_ops`
    text; DataFileError naming `where` when the text is not NeuSight's list of
    [name, dims]."""
    try:
        items = ast.literal_eval(fw_ops) if fw_ops.strip() else []
        pairs = [(str(name), tuple(dims)) for name, dims in items]
    except (ValueError, SyntaxError, TypeError, MemoryError) as e:
        raise DataFileError(f"{where}: {fw_ops[:80]!r} is not a list of [name, dims] "
                            f"({e})") from None
    rows, skipped = [], 0
    for name, dims in pairs:
        if name in GEMMS and len(dims) == len(GEMMS[name][1]):
            op, order = GEMMS[name]
            rows.append({"op": op, "B": 1, "H": None} | dict(zip(order, map(int, dims),
                                                                 strict=True)))
            continue
        op = canonical_op(name[3:]) if name.startswith("VEC") else None
        if op in OPS and OPS[op][0] in ("norm", "binary", "unary") and len(dims) == 2:
            rows.append({"op": op, "B": int(dims[0]), "M": None, "N": None, "K": None,
                         "H": int(dims[1])})
        else:
            skipped += 1
    return rows, skipped


def layer_weights(names: list[str], num_layer: int) -> list[int]:
    """How many times each node of a non-fusion graph counts (see the module docstring):
    `num_layer` for the span from the first to the last layer-0 node, 1 elsewhere."""
    hits = [i for i, n in enumerate(names) if LAYER0.search(n)]
    if not hits:
        return [1] * len(names)
    lo, hi = hits[0], hits[-1]
    return [num_layer if lo <= i <= hi else 1 for i in range(len(names))]


def graph_kernels(store, trace: str = "neusight_e2e") -> pl.DataFrame:
    """Kernel rows of every single-GPU inference op graph: run, fusion, node, weight (how
    many times the node counts), op and shape columns; plus a row per run with op NULL
    carrying the count of kernels left out (`skipped`)."""
    runs = store.sql(
        "SELECT DISTINCT extra->>'run' AS run, (extra->>'num_layer')::INT AS num_layer, "
        "(extra->>'fusion')::BOOLEAN AS fusion FROM serving_latencies WHERE trace = ? "
        "AND extra->>'mode' = 'inf' AND extra->>'parallel' IS NULL", [trace])
    nodes = store.sql("SELECT run, name, fw_ops FROM op_graphs WHERE trace = ? "
                      "ORDER BY run, rowid", [trace])
    by_run = nodes.partition_by("run", as_dict=True)
    out = []
    for r in runs.iter_rows(named=True):
        part = by_run.get((r["run"],))
        if part is None:
            continue
        names = part["name"].to_list()
        weights = ([1] * len(names) if r["fusion"]
                   else layer_weights(names, int(r["num_layer"] or 1)))
        skipped = 0
        for name, text, w in zip(names, part["fw_ops"].to_list(), weights, strict=True):
            rows, s = kernels(text, f"op graph {r['run']} node {name}")
            skipped += s * w
            out += [k | {"run": r["run"], "fusion": r["fusion"], "node": name, "weight": w}
                    for k in rows]
        out.append({"op": None, "run": r["run"], "fusion": r["fusion"], "node": None,
                    "weight": skipped})
    schema = {"run": pl.String, "fusion": pl.Boolean, "node": pl.String, "weight": pl.Int64,
              "op": pl.String, "B": pl.Int64, "M": pl.Int64, "N": pl.Int64, "K": pl.Int64,
              "H": pl.Int64}
    return pl.DataFrame(out, schema=schema)


def traced_kernels(store, trace: str = "neusight_e2e") -> pl.DataFrame:
    """Measured single-kernel nodes of the per-op traces: device (the trace's GPU folder),
    model, run, node, op, shape columns, latency_ms (the traced forward time). Only nodes
    whose op-graph entry is exactly one kernel the model knows, with latency > 0."""
    df = store.sql(
        "SELECT k.device, k.model, k.extra->>'run' AS run, k.extra->>'node' AS node, "
        "k.latency_ms, g.fw_ops FROM kernel_latencies k JOIN op_graphs g "
        "ON g.trace = k.trace AND g.run = k.extra->>'run' AND g.name = k.extra->>'node' "
        "WHERE k.trace = ? AND k.latency_ms > 0 ORDER BY k.device, run, node", [trace])
    out = []
    for r in df.iter_rows(named=True):
        rows, skipped = kernels(r["fw_ops"], f"op graph {r['run']} node {r['node']}")
        if len(rows) == 1 and not skipped:
            out.append({k: r[k] for k in ("device", "model", "run", "node", "latency_ms")}
                       | rows[0])
    return pl.DataFrame(out, schema={"device": pl.String, "model": pl.String,
                                     "run": pl.String, "node": pl.String,
                                     "latency_ms": pl.Float64, "op": pl.String,
                                     "B": pl.Int64, "M": pl.Int64, "N": pl.Int64,
                                     "K": pl.Int64, "H": pl.Int64})



def device_name(col: str = "device") -> pl.Expr:
    """The `devices` name of a NeuSight e2e GPU folder (`Tesla_T4` -> `Tesla T4`)."""
    return pl.col(col).str.replace_all("_", " ", literal=True)
