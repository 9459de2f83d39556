"""The embedded DuckDB store: canonical tables, the `traces` manifest and `rejected_rows`.

One DuckDB file (default `./servecast.duckdb`, `$SERVECAST_DB` overrides). Every ingest is one
transaction: it lands whole or not at all. A file whose sha256 is already in the manifest is
skipped (idempotent re-ingest).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from servecast.config import db_path
from servecast.datasets.base import Adapter, Restage
from servecast.datasets.scan import FileScan, exact_records, scan_file, without_lines
from servecast.errors import (
    DataFileError,
    RejectedRowsError,
    ServecastError,
    StoreLockedError,
    UnknownNameError,
)
from servecast.schema import (
    ADDED_COLUMNS,
    DATA_TABLES,
    MIGRATION_STATEMENTS,
    MIGRATIONS,
    PARTS_TABLES,
    SCHEMA_VERSION,
    SPLIT_TABLES,
    TABLES,
    TRACE_ID_TABLES,
    next_id_sql,
    of_trace,
    physical_tables,
    refresh_view,
    view_sql,
)

if TYPE_CHECKING:
    import polars as pl


@dataclass
class FileResult:
    """What one source file contributed: accepted `rows` and `rejected` rows."""

    file: str
    rows: int
    rejected: int
    skipped: bool = False  # already ingested (same sha256)
    trace: str = ""


@dataclass
class IngestResult:
    """Outcome of `Store.ingest`: per-file counts and the traces written."""

    source: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files if not f.skipped)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files if not f.skipped)

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.skipped]

    @property
    def traces(self) -> list[str]:
        return sorted({f.trace for f in self.files})


#: DuckDB's memory limit during an ingest: a larger stage spills to `<store>.tmp` instead of
#: growing the process (the ingest benchmark's target is a peak RSS <= 2 GB at 44M rows)
INGEST_MEMORY_LIMIT = "1GB"


class _Retry(Exception):
    """An ingest attempt to roll back and rerun: files found to be in the manifest already
    (`duplicates`), or files with lines over the size limit (`long`, to be read from a copy
    without them). Both are known only once the scan, which runs beside the load, ends."""

    def __init__(self, duplicates: set[Path] = frozenset(), long: set[Path] = frozenset()):
        super().__init__(sorted(map(str, duplicates | long)))
        self.duplicates, self.long = set(duplicates), set(long)


def _scanned(future: Future) -> FileScan:
    """The scan a future computed (a read error becomes DataFileError)."""
    try:
        return future.result()
    except OSError as e:
        raise DataFileError(f"{e.filename}: cannot read ({e.strerror}); check the path") from None


def _digest(future: Future) -> str:
    return _scanned(future).sha256


class Store:
    """Open or create the DuckDB store at `path` (None: $SERVECAST_DB or ./servecast.duckdb)."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False):
        self.path = db_path(path)
        if read_only and not self.path.exists():
            raise ServecastError(
                f"{self.path}: no store here; ingest a trace first (`servecast ingest ...`)"
            )
        self.con = self._connect(read_only)
        if read_only and self._older():  # upgrade in place (briefly writable), then read
            self.con.close()
            Store(self.path).close()
            self.con = self._connect(read_only)
        self.read_only = read_only
        self._refuse_foreign()
        self.con.execute("SET TimeZone = 'UTC'")
        try:  # quiet by default; the CLI turns DuckDB's bar on for long ingests
            self.con.execute("SET enable_progress_bar = false")
        except duckdb.Error:  # in Jupyter without ipywidgets DuckDB refuses the setting
            pass
        try:
            if not read_only:
                self._create_schema()
            self._check_version()
        except duckdb.Error as e:
            self.con.close()
            raise _ingest_failure(self.path, [], e) from None

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the DuckDB file (errors naming the file and the fix)."""
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                pid = re.search(r"PID (\d+)", str(e))
                who = f" (PID {pid.group(1)})" if pid else ""
                raise StoreLockedError(
                    f"{self.path}: the store is open for writing by another process{who}; "
                    "wait for it to finish or close it (e.g. stop the dashboard), "
                    "or pass --db with another file"
                ) from None
            msg = str(e).split("\n")[0]
            if "enough bytes" in msg or "not a valid DuckDB" in msg:
                raise DataFileError(
                    f"{self.path}: not a readable DuckDB store: the file is truncated, damaged "
                    f"or not DuckDB ({msg}); restore it from a copy or pass --db with a new "
                    "file (re-ingesting the sources rebuilds a store)") from None
            raise DataFileError(f"{self.path}: cannot open the store: {msg}") from None
        except duckdb.Error as e:
            raise DataFileError(
                f"{self.path}: not a servecast/DuckDB store ({e}); pass --db with another file"
            ) from None

    def _older(self) -> bool:
        """True for a servecast store written with an older schema version."""
        try:
            rows = self.con.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        except duckdb.CatalogException:
            return False
        return bool(rows) and int(rows[0][0]) < SCHEMA_VERSION

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _refuse_foreign(self) -> None:
        """Close and refuse a DuckDB file that holds tables but no servecast `meta`: the
        user's own database, which servecast must not add its tables to."""
        tables = sorted(n for (n,) in self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND NOT temporary").fetchall())
        if tables and "meta" not in tables:
            self.con.close()
            shown = ", ".join(tables[:5]) + (" ..." if len(tables) > 5 else "")
            raise ServecastError(
                f"{self.path}: a DuckDB database that is not a servecast store (tables: "
                f"{shown}); it was left untouched. Pass --db with a new file for the store")

    def _create_schema(self) -> None:
        self.con.execute(f"CREATE TABLE IF NOT EXISTS meta ({TABLES['meta']})")
        self._migrate()  # an older store first: its tables are renamed / extended in place
        for name, cols in physical_tables().items():
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
        for name, cols in ADDED_COLUMNS.items():
            for col, typ in cols:
                self.con.execute(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {col} {typ}")
        for name in SPLIT_TABLES:
            self.con.execute(view_sql(name, verb="CREATE VIEW IF NOT EXISTS"))
        self.con.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
        )

    def _migrate(self) -> None:
        """Upgrade a store of an older schema version in place, in one transaction: add the
        columns of each later version (MIGRATIONS; existing rows get NULL there, nothing else
        changes), run its MIGRATION_STATEMENTS (version 3: `llm_requests` becomes a view over
        the renamed table and a new narrow one) and record the new version. Idempotent: a
        current store (or a new, empty one) is left alone."""
        rows = self.con.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        if not rows or int(rows[0][0]) >= SCHEMA_VERSION:
            return
        version = rows[0][0]
        with self.transaction() as con:
            for v in range(int(version) + 1, SCHEMA_VERSION + 1):
                for table, col, typ in MIGRATIONS.get(v, ()):
                    con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} {typ}")
                for statement in MIGRATION_STATEMENTS.get(v, ()):
                    con.execute(statement)
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                        [str(SCHEMA_VERSION)])

    def _check_version(self) -> None:
        try:
            rows = self.con.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchall()
        except duckdb.CatalogException:
            raise ServecastError(f"{self.path}: not a servecast store (no meta table)") from None
        if rows and int(rows[0][0]) > SCHEMA_VERSION:
            raise ServecastError(
                f"{self.path}: store schema version {rows[0][0]} is newer than this "
                f"servecast's ({SCHEMA_VERSION}); upgrade servecast, or re-ingest into a new "
                "file (--db NEW.duckdb)"
            )

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One all-or-nothing transaction on the store's connection."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- ingest --------------------------------------------------------------------------
    def ingest(
        self,
        source: str | Adapter,
        paths: Iterable[str | Path] | str | Path,
        trace: str | None = None,
        strict: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> IngestResult:
        """Ingest `paths` (files or folders) with adapter `source` into its canonical table.

        `source` is an adapter name or an adapter instance (one that needs arguments, e.g.
        `UserLog(mapping)`). Each file becomes its own trace named after it unless `trace` is
        given (or the adapter groups a folder into one trace). Bad rows go to
        `rejected_rows`; with `strict` any bad row refuses the whole ingest. Returns per-file
        accepted/rejected counts.
        """
        from servecast.datasets import get_adapter

        adapter = source if isinstance(source, Adapter) else get_adapter(source)
        if isinstance(paths, (str, Path)):
            paths = [paths]
        files = adapter.files([Path(p) for p in paths])
        groups = adapter.group(files, trace)
        # scan (hash, count records) in a thread while DuckDB reads; a file found to be a
        # duplicate or to hold over-long lines afterwards rolls the transaction back and the
        # ingest reruns without it / with a copy that leaves those lines out (rare)
        with ThreadPoolExecutor(max_workers=1) as pool, \
                tempfile.TemporaryDirectory(prefix="servecast-") as tmp, self._memory_limit():
            scans = {f: pool.submit(scan_file, f, line_records=adapter.line_records)
                     for f in files}
            duplicates: set[Path] = set()
            substitutes: dict[Path, Path] = {}
            staged: set[Path] = set()  # files a one-pass load found not clean (Restage)
            while True:
                try:
                    return self._load(adapter, groups, scans, duplicates, substitutes,
                                      staged, strict, progress)
                except Restage as r:
                    staged |= r.files
                except _Retry as r:
                    duplicates |= r.duplicates
                    for f in r.long:
                        folder = Path(tmp) / str(len(substitutes))
                        folder.mkdir()
                        lines = {line for line, _, _ in _scanned(scans[f]).long_lines}
                        substitutes[f] = without_lines(f, lines, folder)
                except duckdb.Error as e:
                    raise _ingest_failure(self.path, files, e) from None

    @contextmanager
    def _memory_limit(self) -> Iterator[None]:
        """DuckDB's memory limit set to INGEST_MEMORY_LIMIT meanwhile, then restored."""
        (old,) = self.con.execute("SELECT current_setting('memory_limit')").fetchall()[0]
        self.con.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
        try:
            yield
        finally:
            self.con.execute(f"SET memory_limit = '{old}'")

    def _load(self, adapter, groups: dict[str, list[Path]], scans: dict[Path, Future],
              duplicates: set[Path], substitutes: dict[Path, Path], staged: set[Path],
              strict: bool, progress) -> IngestResult:
        """One attempt of `ingest` in one transaction; raises _Retry (rolled back) if a
        loaded file turns out to be in the manifest already or to hold over-long lines, and
        the adapter raises Restage if a file needs the staged read (`staged` next time)."""
        result = IngestResult(source=adapter.name)
        known = dict(
            self.con.execute("SELECT sha256, trace FROM traces WHERE source = ?", [adapter.name])
            .fetchall()
        )
        total = sum(map(len, groups.values()))
        done = 0
        stale: set[str] = set()  # views missing a one-pass part (LoadContext.stale_views)
        with self.transaction() as con:
            for name, group in groups.items():
                todo = []
                for f in group:
                    if f in duplicates or scans[f].done() and _digest(scans[f]) in known:
                        result.files.append(FileResult(str(f), 0, 0, True,
                                                       known[_digest(scans[f])]))
                    else:
                        todo.append(f)
                if not todo:
                    continue
                ctx = LoadContext(con, name, adapter.name, substitutes,
                                  {f: _scanned(scans[f]).long_lines for f in substitutes},
                                  staged, lambda f: _scanned(scans[f]).records, stale)
                counts = adapter.load(ctx, todo)
                # identical files inside one group are all loaded: in path-keyed layouts (hive
                # partitions, per-device folders) the same bytes carry different keys
                late = {f for f in todo if _digest(scans[f]) in known}
                long = {f for f in todo if _scanned(scans[f]).long_lines and f not in substitutes}
                if late or long:
                    raise _Retry(late, long)
                now = datetime.now()
                for f in todo:
                    rows, rej = counts.get(f, (0, 0))
                    _account(f, _scanned(scans[f]), rows, rej)
                    if rej and (strict or not rows):
                        raise _refusal(con, name, f, rows, rej, adapter.name)
                    digest = _digest(scans[f])
                    con.execute(
                        "INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [name, adapter.name, adapter.table, str(f), digest, rows, rej, now],
                    )
                    known[digest] = name
                    result.files.append(FileResult(str(f), rows, rej, False, name))
                    done += 1
                    if progress:
                        progress(str(f), done, total)
            for table in sorted(stale):  # once per ingest, however many parts it added
                refresh_view(con, table)
        return result

    def remove_trace(self, trace: str) -> int:
        """Delete `trace` from every data table, the manifest and `rejected_rows` in one
        transaction (raises UnknownNameError). Returns the data rows removed."""
        self.trace_info(trace)
        removed = 0
        with self.transaction() as con:
            for table in DATA_TABLES:
                if where := of_trace(table):
                    (n,) = con.execute(f"DELETE FROM {table} WHERE {where}",
                                       [trace]).fetchall()[0]
                    removed += n
            for table in TRACE_ID_TABLES:
                con.execute(f"DELETE FROM {table} WHERE trace = ?", [trace])
            for table, registry in PARTS_TABLES.items():  # one-pass parts: dropped whole
                parts = con.execute(f"SELECT part, rows FROM {registry} WHERE trace = ?",
                                    [trace]).fetchall()
                for part, rows in parts:
                    con.execute(f"DROP TABLE {part}")
                    removed += rows
                if parts:
                    con.execute(f"DELETE FROM {registry} WHERE trace = ?", [trace])
                    refresh_view(con, table)
            con.execute("DELETE FROM rejected_rows WHERE trace = ?", [trace])
            con.execute("DELETE FROM traces WHERE trace = ?", [trace])
        return removed

    # -- queries -------------------------------------------------------------------------
    def sql(self, query: str, params: list | None = None) -> pl.DataFrame:
        """Run SQL and return a polars DataFrame (an empty frame for statements)."""
        try:
            rel = self.con.sql(query, params=params)
            if rel is None:
                import polars as pl

                return pl.DataFrame()
            return rel.pl()
        except duckdb.Error as e:
            raise ServecastError(f"SQL error: {e}") from None

    def query(self, query: str) -> pl.DataFrame:
        """Run a read-only query (SELECT, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN): statements that
        change the store or write, attach or load files and extensions (COPY TO, EXPORT,
        ATTACH, INSTALL/LOAD, ...) raise ServecastError before anything runs."""
        check_read_only(query)
        return self.sql(query)

    def traces(self) -> pl.DataFrame:
        """One row per trace: source, table, files, rows, rejected rows, last ingest time."""
        return self.sql(_TRACES)

    def trace_info(self, trace: str) -> dict:
        """Manifest entry of one trace (raises UnknownNameError)."""
        df = self.sql("SELECT * FROM (" + _TRACES + ") WHERE trace = ?", [trace])
        if df.is_empty():
            raise UnknownNameError(self._unknown(trace))
        return df.row(0, named=True)

    def _unknown(self, trace: str) -> str:
        names = self.con.execute("SELECT DISTINCT trace FROM traces ORDER BY 1").fetchall()
        known = ", ".join(n for (n,) in names) or "(none: ingest one first)"
        return f"unknown trace {trace!r}; known traces: {known}"

    def table_of(self, trace: str) -> str:
        """Canonical table holding `trace`'s rows."""
        return self.trace_info(trace)["table_name"]

    def requests(self, trace: str) -> duckdb.DuckDBPyRelation:
        """The `llm_requests` rows of `trace`, ordered by request_id, as a DuckDB relation."""
        if self.table_of(trace) != "llm_requests":
            raise UnknownNameError(f"trace {trace!r} is not an LLM request trace")
        return self.con.sql(
            f"SELECT * FROM llm_requests WHERE trace = {_quote(trace)} ORDER BY request_id"
        )

    def rows(self, trace: str) -> duckdb.DuckDBPyRelation:
        """All rows of `trace` in its canonical table."""
        return self.con.sql(f"SELECT * FROM {self.table_of(trace)} WHERE trace = {_quote(trace)}")


def _account(path: Path, scan: FileScan, rows: int, rejected: int) -> None:
    """Refuse a file whose accepted + rejected rows differ from the records the scan counted
    (a row the reader dropped silently, or one counted twice). The quick count includes
    blank lines; only a file where it disagrees is counted again without them."""
    if scan.records is None or rows + rejected == scan.records:
        return
    records = exact_records(path, scan)
    if records is None or rows + rejected == records:
        return
    raise DataFileError(
        f"{path}: holds {records:,} records but the reader returned {rows:,} accepted + "
        f"{rejected:,} rejected ({records - rows - rejected:+,} unaccounted for); nothing "
        "was ingested. Look for irregular quoting or line breaks in the file (or split it) "
        "and ingest it again"
    )


def _refusal(con, trace: str, path: Path, rows: int, rejected: int,
             source: str) -> RejectedRowsError:
    """The error refusing `path`: a bad row under --strict, or no row accepted at all."""
    reasons = con.execute(
        "SELECT line, reason FROM rejected_rows WHERE trace = ? AND file = ? ORDER BY line "
        "LIMIT 3", [trace, str(path)]).fetchall()
    where = "; ".join(f"line {ln}: {r}" for ln, r in reasons)
    if rows:
        return RejectedRowsError(
            f"{path}: {rejected} invalid row(s) ({where}); nothing was ingested "
            "(--strict). Fix the rows or drop --strict to reject just them.")
    return RejectedRowsError(
        f"{path}: all {rejected:,} rows rejected ({where}); nothing was ingested. Is "
        f"{source!r} the adapter for this file? `servecast datasets` lists each one's format")


def _ingest_failure(store: Path, files: list[Path], err: duckdb.Error) -> ServecastError:
    """A DuckDB error during an ingest (rolled back) as an error naming the file and fix."""
    msg = str(err).split("\n")[0]
    if any(w in msg.lower() for w in ("no space left", "disk full", "could not write")):
        return ServecastError(
            f"{store}: the disk is full ({msg}); nothing was ingested. Free space on "
            f"{store.parent.resolve()} or pass --db with a file on another disk")
    named = [f for f in files if str(f) in str(err)] or files or [store]
    where = ", ".join(map(str, named[:3])) + (" ..." if len(named) > 3 else "")
    return DataFileError(
        f"{where}: the ingest failed ({msg}); nothing was ingested. Check the file against "
        "`servecast datasets` (a value out of range for its column?)")


def check_read_only(query: str) -> None:
    """Raise ServecastError unless every statement of `query` only reads."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise ServecastError(f"SQL error: {e}") from None
    for st in statements:
        kind = st.type.name
        analyze = kind == "EXPLAIN" and re.match(r"\s*explain\s+analy[sz]e", st.query, re.I)
        if kind not in ("SELECT", "EXPLAIN") or analyze:
            raise ServecastError(
                f"`servecast sql` only reads the store; refused the {kind} statement "
                f"{st.query.strip()[:60]!r}. Export with `SELECT` and redirect the output, or "
                "open the file with DuckDB itself to change it")


#: the manifest summarized per trace
_TRACES = """SELECT trace, source, table_name, count(*) AS files, sum(rows)::BIGINT AS rows,
                    sum(rejected)::BIGINT AS rejected, max(ingested_at) AS ingested_at
             FROM traces GROUP BY ALL ORDER BY trace"""


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class LoadContext:
    """What an adapter gets inside the ingest transaction: the connection and the trace name."""

    def __init__(self, con: duckdb.DuckDBPyConnection, trace: str, source: str,
                 substitutes: dict[Path, Path] | None = None,
                 long_lines: dict[Path, list[tuple[int, int, str]]] | None = None,
                 staged: set[Path] | None = None,
                 records: Callable[[Path], int | None] | None = None,
                 stale_views: set[str] | None = None):
        self.con, self.trace, self.source = con, trace, source
        #: split tables whose view misses a one-pass part added here: the ingest rebuilds
        #: each once, after its last file (`schema.refresh_view`); a caller that builds its
        #: own LoadContext refreshes them itself
        self.stale_views = stale_views if stale_views is not None else set()
        #: files to read through the stage: an earlier one-pass attempt raised Restage
        self.staged = staged if staged is not None else set()
        #: file -> the records the scan counts in it (blank lines included; waits for the
        #: scan; None: not counted)
        self.records = records or (lambda f: None)
        #: source file -> the copy to read instead (its over-long lines left out)
        self.substitutes = substitutes or {}
        #: source file -> (line, bytes, first characters) of the lines left out
        self.long_lines = long_lines or {}
        #: stage table -> {file: rowid of its first row}; rowids follow source order
        self.row_base: dict[str, dict[str, int]] = {}
        #: stage tables holding a row for every line of their files (blank lines included)
        self.every_line: set[str] = set()
        #: stage tables whose rows are numbered, not lines (Parquet): row n is "line" n
        self.row_numbered: set[str] = set()
        #: stage table -> the arrival time (s) its `arrival_s` counts from once inserted
        self.origins: dict[str, float] = {}

    def one_pass(self, path: Path) -> bool:
        """Whether `path` may be loaded in one pass (see `requests.insert_csv_direct`): not
        found unclean by an earlier attempt, and read as it is (no copy without long lines)."""
        return path not in self.staged and path not in self.substitutes

    def readable(self, path: Path) -> Path:
        """The file the reader should open for source file `path`."""
        return self.substitutes.get(path, path)

    def next_request_id(self, table: str = "llm_requests") -> int:
        """First free request_id of this trace (traces may span several files)."""
        sql = (next_id_sql(table) if table in SPLIT_TABLES else
               f"SELECT coalesce(max(request_id) + 1, 0) FROM {table} WHERE trace = $1")
        (n,) = self.con.execute(sql, [self.trace]).fetchall()[0]
        return int(n)
