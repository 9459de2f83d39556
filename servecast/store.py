"""The embedded DuckDB store: canonical tables, the `traces` manifest and `rejected_rows`.

One DuckDB file (default `./servecast.duckdb`, `$SERVECAST_DB` overrides). Every ingest is one
transaction: it lands whole or not at all. A file whose sha256 is already in the manifest is
skipped (idempotent re-ingest).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from servecast.config import db_path
from servecast.errors import (
    DataFileError,
    RejectedRowsError,
    ServecastError,
    StoreLockedError,
    UnknownNameError,
)
from servecast.schema import ADDED_COLUMNS, SCHEMA_VERSION, TABLES

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


class _Duplicates(Exception):
    """Files of an ingest attempt whose sha256 is already stored (the attempt rolls back)."""

    def __init__(self, files: set[Path]):
        super().__init__(sorted(map(str, files)))
        self.files = files


def _digest(future: Future) -> str:
    """The sha256 a hashing future computed (a read error becomes DataFileError)."""
    try:
        return future.result()
    except OSError as e:
        raise DataFileError(f"{e.filename}: cannot read ({e.strerror}); check the path") from None


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Store:
    """Open or create the DuckDB store at `path` (None: $SERVECAST_DB or ./servecast.duckdb)."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False):
        self.path = db_path(path)
        if read_only and not self.path.exists():
            raise ServecastError(
                f"{self.path}: no store here; ingest a trace first (`servecast ingest ...`)"
            )
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                pid = re.search(r"PID (\d+)", str(e))
                who = f" (PID {pid.group(1)})" if pid else ""
                raise StoreLockedError(
                    f"{self.path}: the store is open for writing by another process{who}; "
                    "wait for it to finish or close it (e.g. stop the dashboard), "
                    "or pass --db with another file"
                ) from None
            raise DataFileError(f"{self.path}: cannot open the store: {e}") from None
        except duckdb.Error as e:
            raise DataFileError(
                f"{self.path}: not a servecast/DuckDB store ({e}); pass --db with another file"
            ) from None
        self.read_only = read_only
        self.con.execute("SET TimeZone = 'UTC'")
        try:  # quiet by default; the CLI turns DuckDB's bar on for long ingests
            self.con.execute("SET enable_progress_bar = false")
        except duckdb.Error:  # in Jupyter without ipywidgets DuckDB refuses the setting
            pass
        if not read_only:
            self._create_schema()
        self._check_version()

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create_schema(self) -> None:
        for name, cols in TABLES.items():
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
        for name, cols in ADDED_COLUMNS.items():
            for col, typ in cols:
                self.con.execute(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {col} {typ}")
        self.con.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
        )

    def _check_version(self) -> None:
        try:
            rows = self.con.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchall()
        except duckdb.CatalogException:
            raise ServecastError(f"{self.path}: not a servecast store (no meta table)") from None
        if rows and int(rows[0][0]) != SCHEMA_VERSION:
            raise ServecastError(
                f"{self.path}: store schema version {rows[0][0]}, this servecast expects "
                f"{SCHEMA_VERSION}; re-ingest into a new file (--db NEW.duckdb)"
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
        source: str,
        paths: Iterable[str | Path] | str | Path,
        trace: str | None = None,
        strict: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> IngestResult:
        """Ingest `paths` (files or folders) with adapter `source` into its canonical table.

        Each file becomes its own trace named after it unless `trace` is given (or the adapter
        groups a folder into one trace). Bad rows go to `rejected_rows`; with `strict` any bad
        row refuses the whole ingest. Returns per-file accepted/rejected counts.
        """
        from servecast.datasets import get_adapter

        adapter = get_adapter(source)
        if isinstance(paths, (str, Path)):
            paths = [paths]
        files = adapter.files([Path(p) for p in paths])
        groups = adapter.group(files, trace)
        # hash in a thread while DuckDB reads; a file found to be a duplicate afterwards
        # rolls the transaction back and the ingest reruns without it (rare)
        with ThreadPoolExecutor(max_workers=1) as pool:
            digests = {f: pool.submit(sha256_of, f) for f in files}
            duplicates: set[Path] = set()
            while True:
                try:
                    return self._load(adapter, groups, digests, duplicates, strict, progress)
                except _Duplicates as d:
                    duplicates |= d.files

    def _load(self, adapter, groups: dict[str, list[Path]], digests: dict[Path, Future],
              duplicates: set[Path], strict: bool, progress) -> IngestResult:
        """One attempt of `ingest` in one transaction; raises _Duplicates (rolled back) if a
        loaded file turns out to be in the manifest already."""
        result = IngestResult(source=adapter.name)
        known = dict(
            self.con.execute("SELECT sha256, trace FROM traces WHERE source = ?", [adapter.name])
            .fetchall()
        )
        total = sum(map(len, groups.values()))
        done = 0
        with self.transaction() as con:
            for name, group in groups.items():
                todo = []
                for f in group:
                    if f in duplicates or digests[f].done() and _digest(digests[f]) in known:
                        result.files.append(FileResult(str(f), 0, 0, True,
                                                       known[_digest(digests[f])]))
                    else:
                        todo.append(f)
                if not todo:
                    continue
                ctx = LoadContext(con, name, adapter.name)
                counts = adapter.load(ctx, todo)
                # identical files inside one group are all loaded: in path-keyed layouts (hive
                # partitions, per-device folders) the same bytes carry different keys
                late = {f for f in todo if _digest(digests[f]) in known}
                if late:
                    raise _Duplicates(late)
                now = datetime.now()
                for f in todo:
                    rows, rej = counts.get(f, (0, 0))
                    if strict and rej:
                        reasons = con.execute(
                            "SELECT line, reason FROM rejected_rows WHERE trace = ? AND file = ? "
                            "ORDER BY line LIMIT 3",
                            [name, str(f)],
                        ).fetchall()
                        where = "; ".join(f"line {ln}: {r}" for ln, r in reasons)
                        raise RejectedRowsError(
                            f"{f}: {rej} invalid row(s) ({where}); nothing was ingested "
                            "(--strict). Fix the rows or drop --strict to reject just them."
                        )
                    digest = _digest(digests[f])
                    con.execute(
                        "INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [name, adapter.name, adapter.table, str(f), digest, rows, rej, now],
                    )
                    known[digest] = name
                    result.files.append(FileResult(str(f), rows, rej, False, name))
                    done += 1
                    if progress:
                        progress(str(f), done, total)
        return result

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


#: the manifest summarized per trace
_TRACES = """SELECT trace, source, table_name, count(*) AS files, sum(rows)::BIGINT AS rows,
                    sum(rejected)::BIGINT AS rejected, max(ingested_at) AS ingested_at
             FROM traces GROUP BY ALL ORDER BY trace"""


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class LoadContext:
    """What an adapter gets inside the ingest transaction: the connection and the trace name."""

    def __init__(self, con: duckdb.DuckDBPyConnection, trace: str, source: str):
        self.con, self.trace, self.source = con, trace, source
        #: stage table -> {file: rowid of its first row}; rowids follow source order
        self.row_base: dict[str, dict[str, int]] = {}

    def next_request_id(self, table: str = "llm_requests") -> int:
        """First free request_id of this trace (traces may span several files)."""
        (n,) = self.con.execute(
            f"SELECT coalesce(max(request_id) + 1, 0) FROM {table} WHERE trace = ?", [self.trace]
        ).fetchall()[0]
        return int(n)
