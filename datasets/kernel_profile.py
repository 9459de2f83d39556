"""Kernel profiles measured here (`servecast profile-kernels --out FILE.csv`, the collector
`servecast.collectors.kernel_profiler`): a CSV whose header is exactly the `kernel_latencies`
columns, one row per (op, shape) with latency_ms the median of the timed calls (ms).
Rows land in `kernel_latencies` as written, under the trace name of the ingest."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import file_counts, reject_invalid, require_csv, stage_csv
from servecast.schema import columns

#: the profile's columns, staged as typed (extra as text: checked, then cast to JSON)
COLUMNS = [(name, name, "VARCHAR" if typ == "JSON" else typ)
           for name, typ in columns("kernel_latencies")]
STORED = [name for name, _, _ in COLUMNS if name != "trace"]


class KernelProfile(Adapter):
    name = "kernel-profile"
    table = "kernel_latencies"
    patterns = ("*.csv",)
    catalog = Catalog(
        format="CSV written by `servecast profile-kernels --out FILE.csv`: "
        + ",".join(name for name, _, _ in COLUMNS),
        url="(measured on your own device)",
        license="yours",
        citation="servecast.collectors.kernel_profiler",
    )

    def load(self, ctx, files: list[Path]):
        require_csv(files, "a kernel profile", "servecast profile-kernels --out FILE.csv")
        stage_csv(ctx, files, COLUMNS, hint="a `servecast profile-kernels` CSV")
        reject_invalid(ctx, "_stage", [
            ("op IS NULL OR op = ''", "missing op"),
            ("device IS NULL OR device = ''", "missing device"),
            ("source IS NULL OR source = ''", "missing source"),
            ("latency_ms IS NULL", "missing latency_ms"),
            ("latency_ms < 0 OR latency_std_ms < 0", "negative latency"),
            ("extra IS NOT NULL AND NOT json_valid(extra)", "extra is not valid JSON"),
        ])
        counts = file_counts(ctx, "_stage", files)
        cols = ", ".join(STORED)
        ctx.con.execute(f"INSERT INTO kernel_latencies (trace, {cols}) "
                        f"SELECT ?, {cols} FROM _stage", [ctx.trace])
        return counts
