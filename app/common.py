"""Shared pieces of the dashboard pages: read-only store access, cached queries and analyses,
trace filters, and interactive charts / tables with Vega-Lite / CSV downloads.

The store file comes from `$SERVECAST_DB` (set by `servecast dashboard --db FILE`). The
dashboard opens it read-only for each query and closes it right after (`reading`), so it
never blocks a CLI ingest between reruns; cached results are keyed by the file's mtime. Every
aggregation runs inside DuckDB; the browser gets only aggregated, capped frames (tables, and
the data of the interactive Vega-Lite charts).
Trained models are read from the demo's output folder (`$SERVECAST_OUT`, default `./out`);
models trained from a page live in Streamlit's resource cache (and a temporary folder).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import altair as alt
import polars as pl
import streamlit as st

from servecast.analytics.source import quote
from servecast.config import db_path
from servecast.errors import ServecastError, StoreLockedError
from servecast.numbers import fmt
from servecast.registry import resolve
from servecast.store import Store

#: most rows of a table sent to the browser
MAX_ROWS = 500
_LOCK = threading.RLock()  # one DuckDB connection at a time, many Streamlit session threads
T = TypeVar("T")


def setup(title: str) -> None:
    """Page config and title (call first on every page)."""
    st.set_page_config(page_title=f"servecast · {title}", layout="wide")
    st.title(title)


def db_file() -> Path:
    """The store file the dashboard shows."""
    return db_path(None).resolve()


def _stamp(path: str) -> tuple[int, int]:
    """(mtime ns, size) of the store file: part of every cache key, so a write by another
    process (a CLI ingest) shows up on the next rerun instead of a stale cached result."""
    try:
        st_ = os.stat(path)
    except OSError:
        return (0, 0)
    return (st_.st_mtime_ns, st_.st_size)


@contextmanager
def reading(path: str | Path) -> Iterator[Store]:
    """A read-only connection to the store at `path` for one piece of work, closed right
    after: between reruns the dashboard holds no lock on the file, so `servecast ingest`
    can write to it while the dashboard runs. Raises StoreLockedError while another
    process writes, ServecastError when there is no store."""
    with _LOCK:
        s = Store(path, read_only=True)
        try:
            yield s
        finally:
            s.close()


@contextmanager
def writing(path: str | Path) -> Iterator[Store]:
    """A write connection for one ingest from the dashboard, closed right after (no cached
    result survives it). Raises StoreLockedError while another process holds the store."""
    with _LOCK:
        try:
            with Store(path) as s:
                yield s
        finally:
            st.cache_data.clear()


def store() -> bool:
    """Whether the store can be read now (a message on the page when it cannot: no store
    yet, or another process is writing to it)."""
    try:
        with reading(db_file()):
            return True
    except StoreLockedError as e:
        st.warning(f"{e}\n\nThe dashboard only reads: reload this page when the writer is "
                   "done.")
    except ServecastError as e:
        st.warning(f"{e}")
    return False


def query(sql: str, params: tuple = ()) -> pl.DataFrame:
    """Result of `sql` on the store (cached per store, query and parameters)."""
    path = str(db_file())
    return _query(path, _stamp(path), sql, tuple(params))


@st.cache_data(show_spinner=False, max_entries=256)
def _query(path: str, stamp: tuple, sql: str, params: tuple) -> pl.DataFrame:
    with reading(path) as s:
        return s.sql(sql, list(params) or None)


def traces(*tables: str) -> pl.DataFrame:
    """Traces in the store (one row per trace and table), optionally only of `tables`."""
    df = query("""SELECT trace, source, table_name, count(*) AS files, sum(rows)::BIGINT AS rows,
                         sum(rejected)::BIGINT AS rejected, max(ingested_at) AS ingested_at
                  FROM traces GROUP BY ALL ORDER BY trace, table_name""")
    return df.filter(pl.col("table_name").is_in(tables)) if tables else df


def pick_trace(*tables: str, key: str = "trace", sources: tuple[str, ...] = (),
               prefer: str | None = None) -> str | None:
    """Sidebar select of a trace with rows in one of `tables`, optionally only of adapters
    `sources`, preselecting `prefer` when present (None and a message when none)."""
    df = traces(*tables)
    if sources:
        df = df.filter(pl.col("source").is_in(sources))
    names = df["trace"].unique(maintain_order=True).to_list()
    if not names:
        st.info(f"No trace with {' / '.join(tables)} rows in {db_file()}; ingest one on the "
                "Home page.")
        return None
    index = names.index(prefer) if prefer in names else 0
    return st.sidebar.selectbox("trace", names, index=index, key=key)


def page_trace(title: str, *tables: str, sources: tuple[str, ...] = (),
               prefer: str | None = None) -> str:
    """A page's preamble: `setup(title)`, the store, and the sidebar trace select
    (`pick_trace`); stops the page with a message when there is no store or no such trace."""
    setup(title)
    trace = pick_trace(*tables, sources=sources, prefer=prefer) if store() is not None else None
    if trace is None:
        st.stop()
    return trace


def has_table(trace: str, table: str) -> bool:
    """Whether `trace` has rows in `table` (per the manifest)."""
    return traces(table).filter(pl.col("trace") == trace)["rows"].sum() > 0


# -- filtered LLM-request rows --------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    """Row filters on llm_requests: models / log types (empty = all), arrival window (s)."""

    trace: str
    models: tuple[str, ...] = ()
    log_types: tuple[str, ...] = ()
    t0: float | None = None
    t1: float | None = None

    def where(self) -> str:
        """SQL condition selecting the filtered rows."""
        cond = [f"trace = {quote(self.trace)}"]
        if self.models:
            cond.append(f"model IN ({', '.join(quote(m) for m in self.models)})")
        if self.log_types:
            cond.append(f"log_type IN ({', '.join(quote(m) for m in self.log_types)})")
        if self.t0 is not None:
            cond.append(f"arrival_s >= {float(self.t0)!r}")
        if self.t1 is not None:
            cond.append(f"arrival_s <= {float(self.t1)!r}")
        return " AND ".join(cond)


def request_filters(trace: str) -> Filters:
    """Sidebar widgets for model, log type and time range of `trace` -> Filters."""
    opts = query("""SELECT list(DISTINCT model ORDER BY model) FILTER (WHERE model IS NOT NULL)
                             AS models,
                           list(DISTINCT log_type ORDER BY log_type)
                             FILTER (WHERE log_type IS NOT NULL) AS log_types,
                           min(arrival_s) AS t0, max(arrival_s) AS t1
                    FROM llm_requests WHERE trace = ?""", (trace,)).row(0, named=True)
    models = st.sidebar.multiselect("model", opts["models"] or [], key="f_models")
    logs = st.sidebar.multiselect("log type", opts["log_types"] or [], key="f_logs")
    t0 = t1 = None
    if opts["t0"] is not None and opts["t1"] > opts["t0"]:
        lo, hi = float(opts["t0"]), float(opts["t1"])
        t0, t1 = st.sidebar.slider("arrival window (s since start)", lo, hi, (lo, hi),
                                   key=f"f_time_{trace}")
        if (t0, t1) == (lo, hi):
            t0 = t1 = None
    return Filters(trace, tuple(models), tuple(logs), t0, t1)


def analysis(name: str, filters: Filters, **kwargs: Any) -> Any:
    """`servecast.analytics.<name>` (e.g. "lengths.length_histogram") on the filtered
    llm_requests rows, cached per store, filters and arguments."""
    path = str(db_file())
    return _analysis(path, _stamp(path), name, filters, **kwargs)


@st.cache_data(show_spinner=False, max_entries=512)
def _analysis(path: str, stamp: tuple, name: str, filters: Filters, **kwargs: Any) -> Any:
    with reading(path) as s:
        rel = s.con.sql(f"SELECT * FROM llm_requests WHERE {filters.where()}")
        return _function(name)(rel, **kwargs)


def trace_analysis(name: str, trace: str, **kwargs: Any) -> Any:
    """`servecast.analytics.<name>(store, trace, **kwargs)`, cached per store and arguments."""
    path = str(db_file())
    return _trace_analysis(path, _stamp(path), name, trace, **kwargs)


@st.cache_data(show_spinner=False, max_entries=512)
def _trace_analysis(path: str, stamp: tuple, name: str, trace: str, **kwargs: Any) -> Any:
    with reading(path) as s:
        return _function(name)(s, trace, **kwargs)


def on_store(path: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(store, *args, **kwargs)` on a read-only connection to the store at `path`, closed
    afterwards (for a page's own st.cache_* functions, which take `path` to key their
    cache)."""
    with reading(path) as s:
        return fn(s, *args, **kwargs)


def out_dir() -> Path:
    """The demo's output folder (`$SERVECAST_OUT`, else ./out): models/, moe/run, ..."""
    return Path(os.environ.get("SERVECAST_OUT") or "out").resolve()


def clicked(label: str, key: str, token: Hashable, **kwargs: Any) -> bool:
    """A button that stays "on" for `token` (e.g. trace and settings) in this session: True
    from the click on, on every rerun, until the token changes (then it needs a new click).
    Lets a page run expensive, cached work only on request and keep showing it."""
    done = f"{key}_for"
    if st.button(label, key=key, **kwargs):
        st.session_state[done] = token
    return st.session_state.get(done) == token


def _function(name: str):
    module, fn = name.rsplit(".", 1)
    return resolve("servecast.analytics", f"{module}:{fn}")


# -- output ---------------------------------------------------------------------------------
def chart(fig: alt.TopLevelMixin, name: str) -> None:
    """Show an interactive Vega-Lite chart (from servecast.analytics.interactive) across the
    page, with a download of its spec and data (file `name`.vl.json, opens in the Vega
    editor). Streamlit's theme colors it for the light and dark themes."""
    st.altair_chart(fig, width="stretch")
    name = _slug(name)
    with alt.data_transformers.disable_max_rows():
        spec = fig.to_json()
    st.download_button("Vega-Lite", spec, file_name=f"{name}.vl.json",
                       mime="application/json", key=f"vl_{name}")


def table(df: pl.DataFrame, name: str, caption: str | None = None) -> None:
    """Show at most MAX_ROWS rows of an aggregated frame, with a CSV download of them."""
    shown = df.head(MAX_ROWS)
    if caption:
        st.caption(caption)
    st.dataframe(shown, hide_index=True)
    if df.height > MAX_ROWS:
        st.caption(f"first {MAX_ROWS} of {df.height:,} rows")
    name = _slug(name)
    st.download_button("CSV", shown.write_csv(), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv_{name}")


def metrics(values: dict[str, Any]) -> None:
    """A row of st.metric tiles (numbers formatted to 4 significant digits)."""
    cols = st.columns(len(values))
    for col, (label, v) in zip(cols, values.items(), strict=True):
        col.metric(label, fmt(v, missing="–"))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "data"
