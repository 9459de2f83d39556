"""Host metrics recorded here by the collector `servecast.collectors.host_metrics`: the CSV
of `servecast collect host-metrics --out FILE.csv` (header `t,metric,value`) or the metrics
CSV of `servecast collect interference --out FILE.csv` (`window_id,t,metric,value`), long
form, t in seconds since the recording (or the window's run) started. Rows land in
`host_metrics` as written (window_id NULL for a plain recording)."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import (
    file_counts,
    read_header,
    reject_invalid,
    require_csv,
    stage_csv,
)

RECORDING = [("t", "t", "DOUBLE"), ("metric", "metric", "VARCHAR"), ("value", "value", "DOUBLE")]
WINDOWS = [("window_id", "window_id", "BIGINT"), *RECORDING]
HINT = "a `servecast collect host-metrics` or `collect interference` CSV"


class HostMetrics(Adapter):
    name = "host-metrics"
    table = "host_metrics"
    patterns = ("*.csv",)
    catalog = Catalog(
        format="CSV written by `servecast collect host-metrics --out FILE.csv` ("
        + ",".join(c[0] for c in RECORDING) + ") or `collect interference --out FILE.csv` ("
        + ",".join(c[0] for c in WINDOWS) + ")",
        url="(measured on your own host)",
        license="yours",
        citation="servecast.collectors.host_metrics",
    )

    def load(self, ctx, files: list[Path]):
        require_csv(files, "a host-metrics recording",
                    "servecast collect host-metrics --out FILE.csv")
        windowed = [f for f in files if read_header(f)[:1] == ["window_id"]]
        plain = [f for f in files if f not in windowed]
        ctx.con.execute("DROP TABLE IF EXISTS _hm")
        for i, (group, columns) in enumerate([(plain, RECORDING), (windowed, WINDOWS)]):
            if not group:
                continue
            select = "*" if columns is WINDOWS else "NULL::BIGINT AS window_id, t, metric, value"
            stage_csv(ctx, group, columns, select=select, table=f"_hm{i}", hint=HINT)
            reject_invalid(ctx, f"_hm{i}", [
                ("metric IS NULL OR metric = ''", "missing metric"),
                ("t IS NULL OR NOT isfinite(t) OR t < 0", "t missing, negative or not finite"),
                ("value IS NULL", "missing value"),
                ("window_id IS NOT NULL AND window_id < 0", "negative window_id"),
            ])
        counts = {}
        for i, group in enumerate([plain, windowed]):
            if group:
                counts |= file_counts(ctx, f"_hm{i}", group)
                ctx.con.execute("INSERT INTO host_metrics (trace, window_id, t, metric, value) "
                                f"SELECT ?, window_id, t, metric, value FROM _hm{i}",
                                [ctx.trace])
        return counts
