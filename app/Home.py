"""Dashboard home: what is in the store, and ingest a file by path or upload.

The store is read-only here except for an ingest, which opens a short write connection
(and says so when another process holds the store). An upload is saved to a temporary
folder that is deleted after the ingest, whether it succeeded or not. Errors about a file
given by path never show its contents (a header mismatch names the column count only).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import streamlit as st

from servecast.app import common
from servecast.errors import SchemaMismatchError, ServecastError, StoreLockedError

common.setup("servecast")
st.caption(f"store: `{common.db_file()}`")

# -- overview --------------------------------------------------------------------------------
if common.store():
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
def safe_message(e: ServecastError) -> str:
    """`e`'s message without any content of the file: the found header of a mismatch (the
    first line of whatever file was named) becomes its column count."""
    if isinstance(e, SchemaMismatchError):
        n = len(e.found)
        return re.sub(r"(?m)^(\s*found columns:\s*).*$",
                      rf"\g<1>{n} column(s), not shown by the dashboard", str(e))
    return str(e)


def ingest(source: str, path: Path, trace: str | None) -> None:
    """Ingest `path` with adapter `source` into the store (briefly opened for writing)."""
    bar = st.progress(0.0, text=f"ingesting {path.name} ...")
    try:
        with common.writing(common.db_file()) as writable:
            result = writable.ingest(
                source, [path], trace=trace or None,
                progress=lambda f, i, n: bar.progress(i / max(n, 1), text=f"{Path(f).name}"))
    except StoreLockedError as e:
        bar.empty()
        st.error(f"Not ingested: another process is writing to the store. {e}")
        return
    except ServecastError as e:
        bar.empty()
        st.error(safe_message(e))
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
        with tempfile.TemporaryDirectory(prefix="servecast-upload-") as folder:
            saved = Path(folder) / Path(up.name).name  # deleted with the folder, even on error
            saved.write_bytes(up.getvalue())
            ingest(source, saved, trace or Path(up.name).stem)
if "last_ingest" in st.session_state:
    last = st.session_state["last_ingest"]
    if last["skipped"]:
        st.info(f"already ingested as trace {', '.join(last['traces'])}: nothing to do")
    else:
        st.success(f"ingested {last['rows']:,} rows into {', '.join(last['traces'])}; "
                   f"{last['rejected']:,} rejected row(s)")
