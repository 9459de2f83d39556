"""Shared step of the LLM-request adapters: checks and the insert into `llm_requests`."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.staging import file_counts, reject_invalid

#: rows no LLM trace may contain (reason shown in `rejected_rows`)
TOKEN_CHECKS = [
    ("prompt_tokens IS NULL", "missing prompt token count"),
    ("prompt_tokens < 0", "negative prompt token count"),
    ("output_tokens IS NULL", "missing output token count"),
    ("output_tokens < 0", "negative output token count"),
]


def insert_requests(ctx, stage: str, files: list[Path], checks=(),
                    failed: str = "output_tokens = 0", header_lines: int = 1,
                    drop: list[str] = ()) -> dict[Path, tuple[int, int]]:
    """Reject invalid rows of `stage` (canonical column names), then append it to `llm_requests`.

    request_id continues the trace's numbering in source order; `failed` is an SQL predicate
    (BurstGPT convention by default: zero response tokens); `drop` lists helper columns of
    the stage that are not canonical. Returns per-file counts.
    """
    reject_invalid(ctx, stage, [*checks, *TOKEN_CHECKS], header_lines)
    counts = file_counts(ctx, stage, files)
    skip = ("filename", *drop)
    cols = [r[0] for r in ctx.con.execute(f"DESCRIBE {stage}").fetchall() if r[0] not in skip]
    names = ", ".join(cols)
    first = ctx.next_request_id() - min(ctx.row_base[stage].values(), default=0)
    ctx.con.execute(
        f"""INSERT INTO llm_requests (trace, request_id, failed, {names})
            SELECT ?, {first} + rowid, {failed}, {names} FROM {stage}""",
        [ctx.trace],
    )
    return counts
