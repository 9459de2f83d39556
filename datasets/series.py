"""Shared step of wide per-timestamp CSVs (`time` + numeric counters) -> long `cluster_series`."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.staging import file_counts, read_header, reject_invalid, stage_csv
from servecast.errors import SchemaMismatchError


def insert_series(ctx, files: list[Path], series: str) -> dict[Path, tuple[int, int]]:
    """Stage files whose first column is `time`, reject rows without a valid time, and append
    every other column as (series, ts, metric, value) rows. Returns per-file row counts."""
    header = read_header(files[0])
    if not header or header[0] != "time" or len(header) < 2:
        raise SchemaMismatchError(str(files[0]), ["time", "<metric>", "..."], header,
                                  "a per-timestamp series: `time` then numeric columns")
    columns = [("time", "time", "VARCHAR")] + [(h, h, "DOUBLE") for h in header[1:]]
    stage_csv(ctx, files, columns)
    reject_invalid(ctx, "_stage", [
        ("try_cast(time AS TIMESTAMP) IS NULL", "time is not a date-time"),
    ])
    counts = file_counts(ctx, "_stage", files)
    metrics = ", ".join(f'"{h}"' for h in header[1:])
    ctx.con.execute(
        f"""INSERT INTO cluster_series
            SELECT ?, ?, time::TIMESTAMP, metric, value
            FROM (UNPIVOT (SELECT * EXCLUDE (filename) FROM _stage) ON {metrics}
                  INTO NAME metric VALUE value)""", [ctx.trace, series])
    return counts
