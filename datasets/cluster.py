"""Shared step of the cluster adapters: stage, check, append to `cluster_jobs`."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.staging import Column, file_counts, reject_invalid, stage_csv

JOB_COLUMNS = ["job_id", "task_id", "app", "role", "status", "qos", "submit_s", "start_s",
               "end_s", "duration_s", "num_instances", "cpu_request", "memory_request",
               "gpu_request", "gpu_model", "extra"]

RESOURCES = ("cpu_request", "memory_request", "gpu_request")

#: seconds since the trace origin: negative is allowed (jobs submitted before it), NaN/inf not
TIMES = ("submit_s", "start_s", "end_s", "duration_s")


def insert_jobs(ctx, files: list[Path], columns: list[Column], select: dict[str, str],
                checks=(), hint: str = "") -> dict[Path, tuple[int, int]]:
    """Read `files`, map them to cluster_jobs columns by `select` (column -> SQL over the file's
    columns; job_id defaults to the row ordinal), reject bad rows, append; per-file counts."""
    exprs = {"job_id": "(row_number() OVER ())::VARCHAR", **select}
    unknown = set(exprs) - set(JOB_COLUMNS)
    if unknown:
        raise ValueError(f"not cluster_jobs columns: {sorted(unknown)}")
    stage_csv(ctx, files, columns, ", ".join(f"{sql} AS {c}" for c, sql in exprs.items()),
              hint=hint)
    generic = [(f"{r} < 0", f"negative {r}") for r in RESOURCES if r in exprs]
    if "duration_s" in exprs:
        generic.append(("duration_s < 0", "negative duration (ends before it starts)"))
    generic += [(f"NOT isfinite({c})", f"non-finite {c}") for c in (*TIMES, *RESOURCES)
                if c in exprs]
    reject_invalid(ctx, "_stage", [*checks, *generic])
    counts = file_counts(ctx, "_stage", files)
    names = ", ".join(exprs)
    ctx.con.execute(f"INSERT INTO cluster_jobs (trace, {names}) SELECT ?, {names} FROM _stage",
                    [ctx.trace])
    return counts
