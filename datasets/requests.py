"""Shared step of the LLM-request adapters: checks and the insert into `llm_requests`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import duckdb

from servecast.datasets.base import Restage
from servecast.datasets.staging import Column, check_header, csv_reader, file_counts, reject_invalid
from servecast.schema import columns as columns_of
from servecast.schema import part_for, trace_ids

#: the largest token count `llm_requests` holds (INTEGER columns)
MAX_TOKENS = 2**31 - 1

#: rows no LLM trace may contain (reason shown in `rejected_rows`); token counts are staged
#: as DOUBLE so that fractional, non-finite and out-of-range values are seen, not rounded.
#: Comparisons with constants (NaN and inf are >= 'inf' in DuckDB, -inf < 0) let DuckDB skip
#: a check its column statistics rule out, where isfinite() would test every row.
INF = "'inf'::DOUBLE"
TOKEN_CHECKS = [
    check
    for col, what in (("prompt_tokens", "prompt"), ("output_tokens", "output"))
    for check in (
        (f"{col} IS NULL", f"missing {what} token count"),
        (f"{col} < 0", f"negative {what} token count"),
        (f"{col} >= {INF}", f"non-finite {what} token count"),
        (f"{col} > {MAX_TOKENS} AND {col} < {INF}", f"{what} token count above {MAX_TOKENS:,}"),
        (f"{col} <> trunc({col})", f"fractional {what} token count"),
    )
]

#: times in seconds must be finite, arrivals and durations non-negative
TIME_CHECKS = [
    ("arrival_s >= " + INF, "non-finite arrival time"),
    ("arrival_s < 0", "negative arrival time"),
]
ELAPSED_CHECKS = [
    ("elapsed_s >= " + INF, "non-finite elapsed time"),
    ("elapsed_s < 0", "negative elapsed time"),
]

#: the longest latency (s) a request row may carry: a value above it is a unit mistake
#: (milliseconds declared as seconds) or a corrupt field, not a slow request
MAX_LATENCY_S = 86400.0

#: latency columns (s) -> what a rejection calls them; each must be finite, non-negative,
#: at most MAX_LATENCY_S, and TTFT / queueing no longer than the end-to-end latency
LATENCIES = {"elapsed_s": "end-to-end latency", "ttft_s": "TTFT", "tpot_s": "TPOT",
             "queue_s": "queueing time"}


def latency_checks(cols: list[str]) -> list[tuple[str, str]]:
    """Row checks for the latency columns among `cols` (canonical stage names)."""
    checks = list(ELAPSED_CHECKS) if "elapsed_s" in cols else []
    for col, what in LATENCIES.items():
        if col not in cols:
            continue
        if col != "elapsed_s":
            checks += [(f"{col} >= {INF}", f"non-finite {what}"),
                       (f"{col} < 0", f"negative {what}")]
        checks.append((f"{col} > {MAX_LATENCY_S} AND {col} < {INF}",
                       f"{what} above {MAX_LATENCY_S:.0f} s (a value in ms declared as s?)"))
        if col in ("ttft_s", "queue_s") and "elapsed_s" in cols:
            checks.append((f"{col} > elapsed_s * (1 + 1e-9)",
                           f"{what} longer than the end-to-end latency"))
    return checks


def rebase_arrivals(ctx, stage: str) -> None:
    """Make `arrival_s` seconds since the stage's first finite arrival, as `insert_requests`
    stores it: the origin is recorded in `ctx.origins`, the stage is not rewritten (an
    UPDATE of every stage row cost more than the rest of the checks together)."""
    (t0,) = ctx.con.execute(
        f"SELECT min(arrival_s) FILTER (WHERE isfinite(arrival_s)) FROM {stage}").fetchall()[0]
    ctx.origins[stage] = t0 or 0.0


def _rebased(sql: str, origin: float) -> str:
    """`sql` with every `arrival_s` read as seconds since `origin` (exact: a string cast)."""
    return re.sub(r"\barrival_s\b", f"(arrival_s - '{origin!r}'::DOUBLE)", sql)


def insert_requests(ctx, stage: str, files: list[Path], checks=(),
                    failed: str = "output_tokens = 0", header_lines: int = 1,
                    drop: list[str] = ()) -> dict[Path, tuple[int, int]]:
    """Reject invalid rows of `stage` (canonical column names), then append it to `llm_requests`.

    request_id continues the trace's numbering in source order; `failed` is an SQL predicate
    (BurstGPT convention by default: zero response tokens); `drop` lists helper columns of
    the stage that are not canonical. After `rebase_arrivals`, `checks`, `failed` and the
    stored values see `arrival_s` in seconds since the recorded origin. Returns per-file
    counts.
    """
    cols = [r[0] for r in ctx.con.execute(f"DESCRIBE {stage}").fetchall()
            if r[0] not in ("filename", *drop)]
    timed = [*(TIME_CHECKS if "arrival_s" in cols else ()), *latency_checks(cols)]
    checks = [*checks, *TOKEN_CHECKS, *timed]
    origin = ctx.origins.get(stage)
    if origin is not None:  # rebase_arrivals: arrival_s since the origin
        checks = [(_rebased(c, origin), why) for c, why in checks]
        failed = _rebased(failed, origin)
    reject_invalid(ctx, stage, checks, header_lines)
    counts = file_counts(ctx, stage, files)
    names = ", ".join(cols)
    values = names if origin is None else ", ".join(
        _rebased(c, origin) + " AS arrival_s" if c == "arrival_s" else c for c in cols)
    first = ctx.next_request_id() - min(ctx.row_base[stage].values(), default=0)
    part, key, trace = _part(ctx, cols)
    ctx.con.execute(
        f"""INSERT INTO {part} ({key}, request_id, failed, {names})
            SELECT ?, {first} + rowid, {failed}, {values} FROM {stage}""",
        [trace],
    )
    return counts


def _part(ctx, cols: list[str]) -> tuple[str, str, str | int]:
    """Where the rows of canonical `cols` of this trace go: (physical table, its trace
    column, the trace's value there: its name, or in a narrow part its id, numbered on
    from the ids taken when the trace is new)."""
    part = part_for("llm_requests", ["trace", "request_id", "failed", *cols])
    ids = trace_ids(part)
    if ids is None:
        return part, "trace", ctx.trace
    ctx.con.execute(
        f"""INSERT INTO {ids} SELECT * FROM (SELECT coalesce(max(trace_id) + 1, 0), ? FROM {ids})
            WHERE NOT EXISTS (SELECT 1 FROM {ids} WHERE trace = ?)""", [ctx.trace, ctx.trace])
    (n,) = ctx.con.execute(f"SELECT trace_id FROM {ids} WHERE trace = ?",
                           [ctx.trace]).fetchall()[0]
    return part, "trace_id", n


#: token checks `llm_requests` enforces itself on insert: a NULL count breaks the NOT NULL
#: constraint, a non-finite or too large one the cast to INTEGER; either fails the one-pass
#: insert, which restages the file (the stage then rejects the row with its reason)
ENFORCED = {c for c, _ in TOKEN_CHECKS if c.endswith(" IS NULL") or INF in c}


#: the temp table `insert_csv_direct` reads a file into, in file order, before numbering
DIRECT_STAGE = "_direct"


def insert_csv_direct(ctx, path: Path, columns: list[Column], select: str, checks=(),
                      failed: str = "output_tokens = 0") -> tuple[int, int]:
    """Load a CSV file in one pass of the reader into `llm_requests`, for the common case
    of a file without a bad row; returns (rows stored, 0 rejected).

    `columns` type the file's columns for the reader (a value it cannot parse fails the
    pass), `select` maps them to canonical columns, arrivals rebased as `insert_requests`
    does after `rebase_arrivals` (origin: the first row's arrival). The rows that pass
    every check of `insert_requests` (`checks` and the token / time / latency checks, those
    in ENFORCED by the table itself) are stored, numbered in file order. Raises Restage
    (the store reruns the ingest with the file read through the stage, which names each
    bad row and its reason) unless every record the scan counted was stored: a value the
    reader cannot parse, a row failing a check, a blank line, an arrival before the first
    row's.

    Two parallel statements: the reader's rows, checked and typed, into the temp table
    DIRECT_STAGE (DuckDB keeps file order: preserve_insertion_order), then into the part
    with request ids from the temp table's row ids. A window (`row_number() OVER ()`)
    would number them in the reader's statement, but it runs that whole statement on one
    thread.
    """
    con = ctx.con
    check_header(path, columns)
    reader = csv_reader(columns)
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT {select} FROM {reader}",
                                      [str(path)]).fetchall()]
    try:
        origin = con.execute(f"SELECT arrival_s FROM (SELECT {select} FROM {reader}) LIMIT 1",
                             [str(path)]).fetchall()
    except duckdb.Error:
        raise Restage(path) from None
    if "arrival_s" not in cols or not origin or not math.isfinite(origin[0][0] or math.nan):
        raise Restage(path)
    t0 = origin[0][0]
    tokens = [c for c in TOKEN_CHECKS if c[0] not in ENFORCED]
    every = [*checks, *tokens, *TIME_CHECKS, *latency_checks(cols)]
    timed = [c for c, _ in every if re.search(r"\barrival_s\b", c)]  # on rebased values
    untimed = [c for c, _ in every if not re.search(r"\barrival_s\b", c)]
    names = ", ".join(cols)
    types = dict(columns_of("llm_requests"))
    typed = ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in cols)
    # a check that is NULL fails the row here, where the stage lets it pass: stricter, so
    # at worst the file is read again through the stage (plain ORs cost DuckDB less than
    # checks wrapped in coalesce); so does a value the cast to the stored type refuses
    # (ENFORCED) and row ids with a gap (not seen: a new table's are consecutive)
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {DIRECT_STAGE} AS SELECT {typed} FROM (
                    SELECT * REPLACE ({_rebased("arrival_s", t0)} AS arrival_s)
                    FROM (SELECT {select} FROM {reader}) WHERE NOT ({_any(untimed)}))
                WHERE NOT ({_any(timed)})""", [str(path)])
        first_row, last_row, stored = con.execute(
            f"SELECT min(rowid), max(rowid), count(*) FROM {DIRECT_STAGE}").fetchall()[0]
        if stored != ctx.records(path) or stored and last_row - first_row + 1 != stored:
            raise Restage(path)
        first = ctx.next_request_id()
        part, key, trace = _part(ctx, cols)
        con.execute(
            f"""INSERT INTO {part} ({key}, request_id, failed, {names})
                SELECT ?, {first} + (rowid - {first_row or 0}), {failed}, {names}
                FROM {DIRECT_STAGE}""", [trace])
    except duckdb.Error:  # the rollback drops the temp table
        raise Restage(path) from None
    con.execute(f"DROP TABLE {DIRECT_STAGE}")
    return stored, 0


def _any(conditions: list[str]) -> str:
    """SQL true where any of `conditions` is true, NULL where none is but one is NULL."""
    return " OR ".join(f"({c})" for c in conditions) or "false"
