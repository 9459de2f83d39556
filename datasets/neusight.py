"""NeuSight (ASPLOS'25) kernel latencies: `collect/<op>/p<torch>/<Device>.csv.gz` with
OPName,Latency (ms),Device,..., launch configuration, then the op's shape columns
(B,M,N,K for bmm/linear; B,H for layernorm/softmax/element-wise; conv columns), plus
`device_configs/*.json` spec sheets -> `kernel_latencies` and `devices`.

Launch configuration (kernel name, grid, warps/blocks per SM) is kept in `extra` only: it is
measured on the target device, so predictors must not use it.
"""

from __future__ import annotations

import json
from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import file_counts, read_header, reject_invalid, stage_csv
from servecast.errors import DataFileError, SchemaMismatchError

COMMON = [
    ("OPName", "op", "VARCHAR"), ("Latency", "latency_ms", "DOUBLE"),
    ("Device", "device", "VARCHAR"), ("Torch Version", "torch_version", "VARCHAR"),
    ("CUDNN Version", "cudnn_version", "VARCHAR"), ("Kernel Name", "kernel_name", "VARCHAR"),
    ("Warps per SM", "warps_per_sm", "DOUBLE"), ("Blocks per SM", "blocks_per_sm", "DOUBLE"),
    ("Grid x", "grid_x", "BIGINT"), ("Grid y", "grid_y", "BIGINT"), ("Grid z", "grid_z", "BIGINT"),
    ("Block x", "block_x", "BIGINT"), ("Block y", "block_y", "BIGINT"),
    ("Block z", "block_z", "BIGINT"), ("CUDA Version", "cuda_version", "VARCHAR"),
]
SHAPES = {  # source column -> canonical column
    "B": "B", "M": "M", "N": "N", "K": "K", "H": "H", "Input_Channel": "in_channels",
    "Output_Channel": "out_channels", "Kernel_Szie": "kernel_size", "Kernel_Size": "kernel_size",
    "Input_Size": "input_size", "Stride": "stride", "Padding": "padding",
}
LAUNCH = ["kernel_name", "warps_per_sm", "blocks_per_sm", "grid_x", "grid_y", "grid_z",
          "block_x", "block_y", "block_z", "torch_version", "cudnn_version", "cuda_version"]
SPEC_KEYS = ["Dev_Mem", "Mem_Bw", "Num_Sm", "Core_Per_SM", "Freq", "SingleFLOPs", "L2Cache"]


class NeuSight(Adapter):
    name = "neusight"
    table = "kernel_latencies"
    patterns = ("*.csv", "*.csv.gz", "*.json")
    per_file_traces = False
    catalog = Catalog(
        format="collect/<op>/<torch>/<Device>.csv[.gz]: " + ",".join(c[0] for c in COMMON)
        + ",[Kernels,]<shape columns>; device_configs/<Device>.json: Device," + ",".join(SPEC_KEYS),
        url="https://github.com/sitar-lab/NeuSight/tree/main/scripts/asplos/data/dataset",
        license="MIT",
        citation="Lee et al., Forecasting GPU Performance for Deep Learning Training and "
        "Inference (NeuSight), ASPLOS 2025",
    )

    def load(self, ctx, files: list[Path]):
        counts = {f: self._load_spec(ctx, f) for f in files if f.suffix == ".json"}
        by_header: dict[tuple, list[Path]] = {}
        for f in files:
            if f.suffix != ".json":
                by_header.setdefault(tuple(read_header(f)), []).append(f)
        for header, group in by_header.items():
            counts |= self._load_csvs(ctx, list(header), group)
        return counts

    def _load_csvs(self, ctx, header: list[str], files: list[Path]):
        names = [c[0] for c in COMMON]
        tail = [h for h in header[len(COMMON):] if h != "Kernels"]
        if header[: len(COMMON)] != names or any(h not in SHAPES for h in tail):
            raise SchemaMismatchError(str(files[0]), names + ["[Kernels]", "B", "..."], header,
                                      "NeuSight collect/ files (see `servecast datasets`)")
        columns = list(COMMON)
        if "Kernels" in header:
            columns.append(("Kernels", "kernels", "VARCHAR"))
        columns += [(h, SHAPES[h], "BIGINT") for h in tail]
        columns.sort(key=lambda c: header.index(c[0]))
        stage_csv(ctx, files, columns)
        shape_cols = [SHAPES[h] for h in tail]
        reject_invalid(ctx, "_stage", [
            ("latency_ms IS NULL OR latency_ms <= 0", "missing or non-positive Latency"),
            ("op IS NULL OR device IS NULL", "missing OPName or Device"),
            *[(f"{c} IS NULL OR {c} < 0", f"missing or negative {c}") for c in shape_cols
              if c != "padding"],
        ])
        counts = file_counts(ctx, "_stage", files)
        launch = ", ".join(f"'{c}', {c}" for c in LAUNCH + (["kernels"] if "Kernels" in header
                                                             else []))
        ctx.con.execute(
            f"""INSERT INTO kernel_latencies (trace, source, device, op, {', '.join(shape_cols)},
                latency_ms, extra)
                SELECT ?, 'neusight', device, op, {', '.join(shape_cols)}, latency_ms,
                       json_object({launch}) FROM _stage""", [ctx.trace])
        return counts

    def _load_spec(self, ctx, path: Path) -> tuple[int, int]:
        try:
            spec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFileError(f"{path}: not a JSON device config ({e})") from None
        missing = [k for k in ["Device", *SPEC_KEYS] if k not in spec]
        if missing:
            raise DataFileError(f"{path}: device config lacks {', '.join(missing)}; "
                                f"expected keys Device, {', '.join(SPEC_KEYS)}")
        return (upsert_device(ctx, spec, "neusight"), 0)


def upsert_device(ctx, spec: dict, source: str) -> int:
    """Insert a device spec sheet unless that device is already known; returns rows added."""
    exists = ctx.con.execute("SELECT count(*) FROM devices WHERE device = ?",
                             [spec["Device"]]).fetchall()[0][0]
    if exists:
        return 0
    ctx.con.execute(
        f"INSERT INTO devices VALUES (?, ?, {', '.join('?' * len(SPEC_KEYS))}, ?)",
        [spec["Device"], source, *[spec.get(k) for k in SPEC_KEYS], json.dumps(spec)])
    return 1
