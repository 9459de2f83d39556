"""Shared loading steps: header check, typed DuckDB `read_csv` into a temp stage with the
reader's own rejects, semantic row checks with source line numbers, per-file counts."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import duckdb

from servecast.datasets.scan import MAX_LINE_BYTES, record_kind
from servecast.errors import DataFileError, SchemaMismatchError

Column = tuple[str, str, str]  # (header name in the file, canonical stage name, DuckDB type)


def open_text(path: Path) -> io.TextIOBase:
    """Open a possibly gzip-compressed text file (UTF-8, undecodable bytes replaced)."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace", newline="")


def read_header(path: Path) -> list[str]:
    """Column names on the first line of a CSV file, stripped of blanks and a BOM."""
    try:
        with open_text(path) as fh:
            first = fh.readline()
    except (OSError, EOFError) as e:
        raise DataFileError(f"{path}: cannot read ({e}); download the file again") from None
    if not first.strip():
        raise DataFileError(f"{path}: line 1: the file is empty (no header line)")
    return [c.strip().lstrip("\ufeff") for c in next(csv.reader([first]))]


def check_header(path: Path, columns: list[Column], hint: str = "") -> None:
    """Raise SchemaMismatchError unless the file's header is exactly the expected names."""
    found = read_header(path)
    expected = [c[0] for c in columns]
    if [f.lower() for f in found] != [e.lower() for e in expected]:
        raise SchemaMismatchError(str(path), expected, found, hint)


def require_csv(files: list[Path], what: str, command: str) -> None:
    """DataFileError naming the first of `files` that is not a .csv: `what` (a collector's
    output) is ingested from the CSV that `command` writes."""
    for f in files:
        if not f.name.endswith(".csv"):
            raise DataFileError(f"{f}: not a CSV; {what} is ingested from the CSV that "
                                f"`{command}` writes")


def stage_csv(ctx, files: list[Path], columns: list[Column], select: str = "*",
              table: str = "_stage", hint: str = "", **read_options) -> None:
    """Read `files` with DuckDB's `read_csv` into temp table `table`: `select` over the typed
    columns (SQL expressions with aliases) plus the `filename` column.

    Rows the reader cannot parse (text in a numeric column, wrong column count, invalid
    UTF-8) go to `rejected_rows` with their line. A file that cannot be read at all
    (truncated gzip, I/O error) raises DataFileError and the transaction rolls back.
    """
    for f in files:
        check_header(f, columns, hint)
    # the file name as an ENUM: one small code per row instead of a copy of the path
    as_enum = f"filename::{enum_of(files)} AS filename"
    select = f"* REPLACE ({as_enum})" if select == "*" else f"{select}, {as_enum}"
    con = ctx.con
    con.execute("DROP TABLE IF EXISTS _rej; DROP TABLE IF EXISTS _rej_scan")
    source = _source(ctx, files, csv_reader(
        columns, store_rejects=True, rejects_table="_rej", rejects_scan="_rej_scan",
        filename=True, **read_options))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {select} FROM {source}",
                    [[str(ctx.readable(f)) for f in files]])
    except duckdb.Error as e:
        raise DataFileError(_read_failure(files, e)) from None
    ctx.row_base[table] = dict(
        con.execute(f"SELECT filename, min(rowid) FROM {table} GROUP BY 1").fetchall())
    # one rejected row per source line: the reader reports one error per failing column
    con.execute(
        f"""INSERT INTO rejected_rows
            SELECT ?, {_original(ctx, files, 'file_path')}, line,
                   string_agg(error_type || ': ' || message, '; ' ORDER BY error_type),
                   trim(any_value(csv_line), chr(10) || chr(13))
            FROM (SELECT s.file_path, e.line, e.error_type, any_value(e.csv_line) AS csv_line,
                         arg_min(e.error_message, e.column_idx) AS message
                  FROM _rej e JOIN _rej_scan s USING (scan_id, file_id) GROUP BY ALL)
            GROUP BY ALL""",
        [ctx.trace],
    )
    reject_long_lines(ctx, files)


def csv_reader(columns: list[Column], **options) -> str:
    """DuckDB `read_csv(?, ...)` of the files bound to `?`: header line, comma, double
    quotes, `columns` typed as given (no detection), plus `options` (Python values)."""
    spec = "{" + ", ".join(f"'{name}': '{typ}'" for _, name, typ in columns) + "}"
    opts = "".join(f", {k}={str(v).lower() if isinstance(v, bool) else repr(v)}"
                   for k, v in options.items())
    return f"""read_csv(?, header=true, auto_detect=false, delim=',', quote='"', escape='"',
                columns={spec}{opts})"""


def reject_long_lines(ctx, files: list[Path]) -> None:
    """Store the lines the scan found over the size limit as rejected rows (the reader got a
    copy with those lines blanked)."""
    rows = [(ctx.trace, str(f), line, f"line of {size:,} bytes is over the "
             f"{MAX_LINE_BYTES // 1024} KiB limit; split or shorten it", prefix + " ...")
            for f in files for line, size, prefix in ctx.long_lines.get(f, ())]
    if rows:
        ctx.con.executemany("INSERT INTO rejected_rows VALUES (?, ?, ?, ?, ?)", rows)


def _source(ctx, files: list[Path], reader: str) -> str:
    """`reader` (a table function over the readable copies) with `filename` mapped back to
    the source files' names where a copy stands in for one."""
    if not any(f in ctx.substitutes for f in files):
        return reader
    return f"(SELECT * REPLACE ({_original(ctx, files, 'filename')} AS filename) FROM {reader})"


def _original(ctx, files: list[Path], column: str) -> str:
    """SQL mapping the readable path in `column` to the source file's name."""
    subs = [(ctx.substitutes[f], f) for f in files if f in ctx.substitutes]
    if not subs:
        return column
    whens = " ".join(f"WHEN {_lit(c)} THEN {_lit(f)}" for c, f in subs)
    return f"CASE {column} {whens} ELSE {column} END"


def _lit(p: Path) -> str:
    return "'" + str(p).replace("'", "''") + "'"


def enum_of(files: list[Path]) -> str:
    """SQL ENUM type whose members are the files' names."""
    return "ENUM(" + ", ".join(map(_lit, files)) + ")"


def _read_failure(files: list[Path], err: Exception) -> str:
    msg = str(err).split("\n")[0]
    named = [f for f in files if str(f) in str(err)] or files
    where = ", ".join(map(str, named[:3]))
    compressed = any(f.name.endswith(".gz") for f in named)
    if compressed and any(w in msg.lower() for w in ("gzip", "zlib", "compress")):
        return f"{where}: the gzip stream is truncated or corrupt ({msg}); download the file again"
    return f"{where}: cannot be read as CSV ({msg}); check the file against `servecast datasets`"


def reject_invalid(ctx, table: str, checks: list[tuple[str, str]], header_lines: int = 1) -> int:
    """Move rows of `table` matching any `(sql_condition, reason)` into `rejected_rows`: one
    row per source line, with every reason that applies and the line as it is in the file.

    Line numbers are the rows' lines in their source file (DuckDB's numbering, see
    `records`), found by walking the file past blank lines and the lines already rejected.
    Rows of a table in `ctx.row_numbered` (a format without lines, e.g. Parquet) are named
    by their 1-based row number, without content. Returns the number of rows moved.
    """
    con = ctx.con
    cond = " OR ".join(f"coalesce({c}, false)" for c, _ in checks)
    reason = "concat_ws('; ', " + ", ".join(
        f"CASE WHEN coalesce({c}, false) THEN '{r}' END" for c, r in checks) + ")"
    bad = con.execute(
        f"SELECT filename, rowid, {reason} FROM {table} WHERE {cond} ORDER BY rowid"
    ).fetchall()
    if not bad:
        return 0
    base = ctx.row_base[table]
    every_line = table in ctx.every_line  # stage_lines: a row per line, blank ones too
    rows = []
    if table in ctx.row_numbered:
        rows = [(ctx.trace, f, rowid - base[f] + 1, why, None) for f, rowid, why in bad]
    for f in sorted({b[0] for b in bad} if not rows else ()):
        # 1-based ordinal among the rows the reader kept -> reason
        wanted = {rowid - base[f] + 1: why for g, rowid, why in bad if g == f}
        skipped = set() if every_line else {line for (line,) in con.execute(
            "SELECT line FROM rejected_rows WHERE trace = ? AND file = ? AND line IS NOT NULL",
            [ctx.trace, f]).fetchall()}
        kept = 0
        for line, text in records(Path(f)):
            text = text.rstrip("\r\n")
            if line <= header_lines or line in skipped or not (text or every_line):
                continue  # the header, a line the reader rejected, a blank line it skipped
            kept += 1
            if kept in wanted:
                rows.append((ctx.trace, f, line, wanted.pop(kept), text))
                if not wanted:
                    break
        rows += [(ctx.trace, f, None, why, None) for why in wanted.values()]  # not found
    con.executemany("INSERT INTO rejected_rows VALUES (?, ?, ?, ?, ?)", rows)
    con.execute(f"DELETE FROM {table} WHERE {cond}")
    return len(rows)


def records(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its line break) of each record of `path`, numbered as DuckDB
    numbers them: every line counts, blank ones included, except that a CSV record with
    line breaks inside quotes is one line."""
    quoted = record_kind(path) == "csv"
    line, record = 0, None
    with open_text(path) as fh:
        for text in fh:
            if record is None:
                line, record = line + 1, text
            else:
                record += text
            if quoted and record.count('"') % 2:
                continue  # a line break inside quotes: the record goes on
            yield line, record
            record = None
    if record is not None:
        yield line, record


def file_counts(ctx, table: str, files: list[Path]) -> dict[Path, tuple[int, int]]:
    """Per file: (rows left in `table`, rows of that file in `rejected_rows` for this trace)."""
    names = [str(f) for f in files]
    kept = dict(ctx.con.execute(
        f"SELECT filename, count(*) FROM {table} GROUP BY 1").fetchall())
    rej = dict(ctx.con.execute(
        "SELECT file, count(*) FROM rejected_rows WHERE trace = ? AND file IN ? GROUP BY 1",
        [ctx.trace, names]).fetchall())
    return {f: (int(kept.get(str(f), 0)), int(rej.get(str(f), 0))) for f in files}


def number_rows(ctx, table: str) -> None:
    """Mark `table` (rows in file order, no lines: Parquet, a JSON document) as numbered by
    row: its rejected rows are named by 1-based row number (`reject_invalid`)."""
    ctx.row_base[table] = dict(
        ctx.con.execute(f"SELECT filename, min(rowid) FROM {table} GROUP BY 1").fetchall())
    ctx.row_numbered.add(table)


def stage_lines(ctx, files: list[Path], select: str, table: str = "_stage") -> None:
    """Read text files line by line (JSONL) with DuckDB's reader into `table`: `select` over
    the raw line `j` plus `filename`. Rows keep file order, blank lines included (j NULL),
    so line = ordinal + 1. Lines over the size limit are rejected here (blank in the copy
    the reader gets)."""
    reader = _source(ctx, files, """read_csv(?,
                columns={'j': 'VARCHAR'}, header=false, delim='\\x01', quote='', escape='',
                auto_detect=false, filename=true, strict_mode=false)""")
    try:
        ctx.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {table} AS SELECT {select},
                filename::{enum_of(files)} AS filename FROM {reader}""",
            [[str(ctx.readable(f)) for f in files]],
        )
    except duckdb.Error as e:
        raise DataFileError(_read_failure(files, e)) from None
    ctx.row_base[table] = dict(
        ctx.con.execute(f"SELECT filename, min(rowid) FROM {table} GROUP BY 1").fetchall())
    ctx.every_line.add(table)
    reject_long_lines(ctx, files)
