"""HELP (NeurIPS'21) NAS-Bench-201 latencies: `latency/<device>.csv` (arch_index,latency_ms)
for 15,625 architectures per device setting, `architectures.csv` (arch_index,arch cell
string) and `split.json` (meta_train / meta_valid / meta_test devices and the 10 reference
architectures of the hardware embedding) -> `kernel_latencies` (op 'nasbench201'),
`architectures`, `benchmark_splits`."""

from __future__ import annotations

import json
from pathlib import Path

from servecast.datasets.base import Adapter, Catalog, stem
from servecast.datasets.staging import file_counts, reject_invalid, stage_csv
from servecast.errors import DataFileError

LATENCY = [("arch_index", "arch_index", "BIGINT"), ("latency_ms", "latency_ms", "DOUBLE")]
ARCHS = [("arch_index", "arch_index", "BIGINT"), ("arch", "arch", "VARCHAR")]


class HelpNasBench201(Adapter):
    name = "help-nasbench201"
    table = "kernel_latencies"
    patterns = ("*.csv", "*.csv.gz", "*.json")
    per_file_traces = False
    catalog = Catalog(
        format="latency/<device>.csv: arch_index,latency_ms; architectures.csv: arch_index,arch; "
        "split.json: {meta_train, meta_valid, meta_test, hardware_embedding_arch_indices}",
        url="https://github.com/HayeonLee/HELP/tree/main/data/nasbench201",
        license="MIT",
        citation="Lee et al., HELP: Hardware-Adaptive Efficient Latency Prediction for NAS via "
        "Meta-Learning, NeurIPS 2021",
    )

    def load(self, ctx, files: list[Path]):
        counts = {}
        archs = [f for f in files if stem(f) == "architectures"]
        splits = [f for f in files if f.suffix == ".json"]
        lat = [f for f in files if f not in archs and f not in splits]
        if archs:
            stage_csv(ctx, archs, ARCHS, hint="architectures.csv has arch_index,arch")
            reject_invalid(ctx, "_stage", [("arch_index IS NULL", "missing arch_index")])
            counts |= file_counts(ctx, "_stage", archs)
            ctx.con.execute("INSERT INTO architectures SELECT ?, arch_index, arch FROM _stage",
                            [ctx.trace])
        if lat:
            stage_csv(ctx, lat, LATENCY, "regexp_extract(filename, '([^/]+?)\\.csv(\\.gz)?$', 1) "
                      "AS device, arch_index, latency_ms",
                      hint="latency files: arch_index,latency_ms")
            reject_invalid(ctx, "_stage", [
                ("arch_index IS NULL OR arch_index < 0", "missing or negative arch_index"),
                ("latency_ms IS NULL OR latency_ms <= 0", "missing or non-positive latency_ms"),
            ])
            counts |= file_counts(ctx, "_stage", lat)
            ctx.con.execute(
                """INSERT INTO kernel_latencies (trace, source, device, op, arch_index, latency_ms)
                   SELECT ?, 'help', device, 'nasbench201', arch_index, latency_ms FROM _stage""",
                [ctx.trace])
        for f in splits:
            counts[f] = (self._load_split(ctx, f), 0)
        return counts

    def _load_split(self, ctx, path: Path) -> int:
        try:
            split = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFileError(
                f"{path}: not valid JSON ({e}); expected HELP's split.json") from None
        if not isinstance(split, dict) or not all(isinstance(v, list) for v in split.values()):
            raise DataFileError(f"{path}: expected an object of lists (meta_train, meta_valid, "
                                "hardware_embedding_arch_indices)")
        rows = [(ctx.trace, k, str(item)) for k, v in split.items() for item in v]
        ctx.con.executemany("INSERT INTO benchmark_splits VALUES (?, ?, ?)", rows)
        return len(rows)
