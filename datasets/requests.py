"""Shared step of the LLM-request adapters: checks and the insert into `llm_requests`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import duckdb

from servecast.datasets.base import Restage
from servecast.datasets.staging import Column, check_header, csv_reader, file_counts, reject_invalid
from servecast.schema import PARTS_TABLES, part_for, spec, trace_ids
from servecast.schema import columns as columns_of

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


def row_checks(cols: list[str], checks=(), tokens=TOKEN_CHECKS) -> list[tuple[str, str]]:
    """Every check of a request row of canonical `cols`: the adapter's `checks`, the
    `tokens` checks, the arrival checks (with an `arrival_s`) and the latency checks."""
    return [*checks, *tokens, *(TIME_CHECKS if "arrival_s" in cols else ()),
            *latency_checks(cols)]


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
    checks = row_checks(cols, checks)
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


#: the smallest file (bytes) an adapter loads in one pass (`insert_csv_direct`); a smaller
#: one goes through the stage into the shared narrow part: each one-pass part is a table
#: of its own and a branch of the `llm_requests` view that every query of it plans, so a
#: folder of small files must not become as many parts
ONE_PASS_MIN_BYTES = 32 << 20


def insert_csv_direct(ctx, path: Path, columns: list[Column], select: str, checks=(),
                      failed: str = "output_tokens = 0") -> tuple[int, int]:
    """Load a CSV file in one pass of the reader into a new one-pass part of
    `llm_requests` (schema.PARTS_TABLES), for the common case of a file without a bad row;
    returns (rows stored, 0 rejected).

    `columns` type the file's columns for the reader (a value it cannot parse fails the
    pass), `select` maps them to canonical columns, arrivals rebased as `insert_requests`
    does after `rebase_arrivals` (origin: the first row's arrival). The rows that pass
    every check of `insert_requests` (`checks` and the token / time / latency checks, those
    in ENFORCED by the part itself) are stored in file order; `failed`, a predicate over
    the stored columns that is never NULL there, and the request ids (the part's row ids
    on from the trace's next id) are computed by the view, which the ingest rebuilds once
    after its last file (`ctx.stale_views`: not yet here). Raises Restage (the store reruns
    the ingest with the file read through the stage, which names each bad row and its
    reason) unless every record the scan counted was stored: a value the reader cannot
    parse, a row failing a check, a blank line, an arrival before the first row's.

    One statement, parallel: DuckDB keeps file order (preserve_insertion_order) and numbers
    a new table's rows consecutively. Writing into the shared narrow part instead needs
    the ids stored: a window (`row_number() OVER ()`) runs the whole statement on one
    thread, a temp table numbered by its row ids costs a second statement.
    """
    con = ctx.con
    check_header(path, columns)
    reader = csv_reader(columns)
    try:  # one bind of the reader: the canonical columns and the first row's arrival
        cursor = con.execute(f"SELECT {select} FROM {reader} LIMIT 1", [str(path)])
        cols = [d[0] for d in cursor.description]
        head = cursor.fetchall()
    except duckdb.Error:
        raise Restage(path) from None
    if "arrival_s" not in cols or not head or not math.isfinite(
            head[0][cols.index("arrival_s")] or math.nan):
        raise Restage(path)
    t0 = head[0][cols.index("arrival_s")]
    every = row_checks(cols, checks, [c for c in TOKEN_CHECKS if c[0] not in ENFORCED])
    timed = [c for c, _ in every if re.search(r"\barrival_s\b", c)]  # on rebased values
    untimed = [c for c, _ in every if not re.search(r"\barrival_s\b", c)]
    types = dict(columns_of("llm_requests"))
    typed = ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in cols)
    first = ctx.next_request_id()
    registry = PARTS_TABLES["llm_requests"]
    (n,) = con.execute(f"""SELECT coalesce(max(CAST(regexp_extract(part, '(\\d+)$', 1)
                                                   AS INTEGER)) + 1, 0)
                           FROM {registry}""").fetchall()[0]
    part = f"llm_requests_part{n}"
    # a check that is NULL fails the row here, where the stage lets it pass: stricter, so
    # at worst the file is read again through the stage (plain ORs cost DuckDB less than
    # checks wrapped in coalesce); so does a value the cast to the stored type or the
    # part's NOT NULL refuses (ENFORCED) and row ids with a gap (not seen: a new table's
    # are consecutive)
    try:
        con.execute(f"CREATE TABLE {part} ({spec('llm_requests', cols)})")
        (stored,) = con.execute(
            f"""INSERT INTO {part} ({", ".join(cols)}) SELECT {typed} FROM (
                    SELECT * REPLACE ({_rebased("arrival_s", t0)} AS arrival_s)
                    FROM (SELECT {select} FROM {reader}) WHERE NOT ({_any(untimed)}))
                WHERE NOT ({_any(timed)})""", [str(path)]).fetchall()[0]
        lo, hi = con.execute(f"SELECT min(rowid), max(rowid) FROM {part}").fetchall()[0]
    except duckdb.Error:  # the rollback drops the part
        raise Restage(path) from None
    if stored != ctx.records(path) or stored and hi - lo + 1 != stored:
        raise Restage(path)
    con.execute(f"INSERT INTO {registry} VALUES (?, ?, ?, ?, ?, ?)",
                [part, ctx.trace, first, stored, failed, ",".join(cols)])
    ctx.stale_views.add("llm_requests")  # the view gains the part once the ingest ends
    return stored, 0


def _any(conditions: list[str]) -> str:
    """SQL true where any of `conditions` is true, NULL where none is but one is NULL."""
    return " OR ".join(f"({c})" for c in conditions) or "false"
