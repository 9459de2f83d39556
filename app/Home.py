"""Dashboard home: what is in the store, and ingest a file by path or upload."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from servecast.app import common
from servecast.errors import ServecastError, StoreLockedError
from servecast.store import Store

common.setup("servecast")
st.caption(f"store: `{common.db_file()}`")

# -- overview --------------------------------------------------------------------------------
store = common.store()
if store is not None:
    traces = common.traces()
    common.metrics({
        "traces": traces["trace"].n_unique(),
        "rows": int(traces["rows"].sum() or 0),
        "rejected rows": int(traces["rejected"].sum() or 0),
        "tables": traces["table_name"].n_unique(),
    })
    st.subheader("Traces")
    common.table(traces, "traces")
    rejected = common.query("SELECT trace, file, line, reason FROM rejected_rows "
                            "ORDER BY trace, file, line LIMIT 50")
    if rejected.height:
        with st.expander(f"first rejected rows ({rejected.height})"):
            common.table(rejected, "rejected_rows")


# -- ingest ----------------------------------------------------------------------------------
def ingest(source: str, path: Path, trace: str | None) -> None:
    """Ingest `path` with adapter `source` into the store (briefly opened for writing)."""
    bar = st.progress(0.0, text=f"ingesting {path.name} ...")
    common.release_store()  # DuckDB: one writer, and no reader alongside it in this process
    try:
        with Store(common.db_file()) as writable:
            result = writable.ingest(
                source, [path], trace=trace or None,
                progress=lambda f, i, n: bar.progress(i / max(n, 1), text=f"{Path(f).name}"))
    except StoreLockedError as e:
        bar.empty()
        st.error(f"The store is locked by another process: {e}")
        return
    except ServecastError as e:
        bar.empty()
        st.error(str(e))
        return
    bar.progress(1.0, text="done")
    st.session_state["last_ingest"] = {"rows": result.rows, "rejected": result.rejected,
                                       "traces": result.traces,
                                       "skipped": bool(result.skipped and not result.rows)}
    st.rerun()  # redraw the overview with the new rows


st.subheader("Ingest a file")
from servecast.datasets import adapters  # noqa: E402

names = sorted(adapters())
col_src, col_trace = st.columns(2)
source = col_src.selectbox("format (adapter)", names, key="ingest_source")
trace = col_trace.text_input("trace name (optional)", key="ingest_trace")
by_path, by_upload = st.tabs(["by path", "upload"])
with by_path:
    path = st.text_input("file or folder on the server", key="ingest_path")
    if st.button("Ingest path", key="ingest_path_go", disabled=not path):
        ingest(source, Path(path).expanduser(), trace)
with by_upload:
    up = st.file_uploader("trace file", key="ingest_upload")
    if up is not None and st.button("Ingest upload", key="ingest_upload_go"):
        folder = Path(tempfile.mkdtemp(prefix="servecast-upload-"))
        saved = folder / Path(up.name).name
        saved.write_bytes(up.getvalue())
        ingest(source, saved, trace or Path(up.name).stem)
if "last_ingest" in st.session_state:
    last = st.session_state["last_ingest"]
    if last["skipped"]:
        st.info(f"already ingested as trace {', '.join(last['traces'])}: nothing to do")
    else:
        st.success(f"ingested {last['rows']:,} rows into {', '.join(last['traces'])}; "
                   f"{last['rejected']:,} rejected row(s)")
