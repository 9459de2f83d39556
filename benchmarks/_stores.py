"""A benchmark store with the shared LLM traces (built once in $SERVECAST_BENCH_DB or a temp
file; ingest is idempotent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

LLM_TRACES = ("azure_conv", "azure_code", "mooncake_conversation", "sharegpt")


def llm_store(traces: tuple[str, ...] = LLM_TRACES):
    """A Store holding `traces` ingested from the shared data folder."""
    from servecast.datasets.catalog import SHARED, shared_path
    from servecast.store import Store

    path = Path(os.environ.get("SERVECAST_BENCH_DB")
                or Path(tempfile.gettempdir()) / "servecast_bench_llm.duckdb")
    store = Store(path)
    for source, rel, trace in SHARED:
        if trace in traces:
            store.ingest(source, [shared_path(rel)], trace=trace)
    return store
