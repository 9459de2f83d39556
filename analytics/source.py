"""Where an analytics function reads its rows: a trace of a Store, or any DuckDB relation.

Every query is written against a table called `t`; `Source.sql` binds `t` to the trace's rows
(a CTE on its canonical table) or to the relation, runs the query inside DuckDB and returns a
polars DataFrame. Nothing is materialized in Python beyond the query's result.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from servecast.errors import ServecastError, UnknownNameError
from servecast.store import Store


def quote(s: str) -> str:
    """SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


@dataclass
class Source:
    """Rows of one canonical table: `trace` of `store`, or a DuckDB `relation`."""

    store: Store | None = None
    trace: str | None = None
    relation: duckdb.DuckDBPyRelation | None = None
    table: str = "llm_requests"

    @property
    def name(self) -> str:
        return self.trace or "relation"

    def sql(self, query: str, params: list | None = None) -> pl.DataFrame:
        """Run `query` (which reads table `t`) and return its result as polars."""
        try:
            if self.relation is not None:
                if params:
                    raise ServecastError("parameters are not supported on a relation source")
                return self.relation.query("t", query).pl()
            con = self.store.con
            con.complete()  # a pending result of an earlier execute() would block this query
            cte = f"WITH t AS (SELECT * FROM {self.table} WHERE trace = {quote(self.trace)})"
            body = query.lstrip()
            if body[:5].upper() == "WITH ":  # merge the query's own CTEs into ours
                body = ", " + body[5:]
            return con.sql(f"{cte} {body}", params=params).pl()
        except duckdb.Error as e:
            raise ServecastError(f"{self.name}: query failed: {e}") from None

    def scalar(self, query: str):
        """First value of the first row of `query` (None when empty)."""
        df = self.sql(query)
        return None if df.is_empty() else df.item(0, 0)

    def columns(self) -> list[str]:
        """Column names of `t`."""
        return self.sql("SELECT * FROM t LIMIT 0").columns

    def has_values(self, column: str) -> bool:
        """Whether `column` exists and has at least one non-NULL value."""
        if column not in self.columns():
            return False
        return bool(self.scalar(f"SELECT count({column}) > 0 FROM t"))


def source(src, trace: str | None = None, table: str | None = None) -> Source:
    """A `Source` for (`store`, `trace`), a DuckDB relation, or an existing Source.

    With a store, the trace must exist and (when `table` is given) live in that table;
    otherwise UnknownNameError names the known traces / the trace's kind.
    """
    if isinstance(src, Source):
        return src
    if isinstance(src, duckdb.DuckDBPyRelation):
        return Source(relation=src, table=table or "relation")
    if isinstance(src, Store):
        if trace is None:
            raise ServecastError("name the trace to analyse (see `servecast traces`)")
        src.con.complete()  # see Source.sql
        kind = src.table_of(trace)
        if table and kind != table:
            raise UnknownNameError(
                f"trace {trace!r} holds {kind} rows, this analysis needs {table}; "
                "pick a trace of that kind (see `servecast traces`)"
            )
        return Source(store=src, trace=trace, table=kind)
    raise TypeError(f"expected a Store, a DuckDB relation or a Source, got {type(src).__name__}")
