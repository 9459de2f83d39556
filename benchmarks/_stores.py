"""Benchmark stores: the shared LLM traces (built once in $SERVECAST_BENCH_DB or a temp file;
ingest is idempotent) and the Azure VM Noise trace in a given file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

LLM_TRACES = ("azure_conv", "azure_code", "mooncake_conversation", "sharegpt")


def llm_store(traces: tuple[str, ...] = LLM_TRACES):
    """A Store holding `traces` ingested from the shared data folder."""
    from servecast.datasets.catalog import ingest_shared
    from servecast.store import Store

    path = Path(os.environ.get("SERVECAST_BENCH_DB")
                or Path(tempfile.gettempdir()) / "servecast_bench_llm.duckdb")
    if path.exists():  # already built: read-only, so several benchmarks can share it
        store = Store(path, read_only=True)
        if set(traces) <= set(store.traces()["trace"].to_list()):
            return store
        store.close()
    store = Store(path)
    ingest_shared(store, traces)
    return store


def vm_store(path: str):
    """A Store at `path` holding the shared Azure VM Noise folder as trace `azure_vm_noise`
    (ingested on first use)."""
    from servecast.datasets.catalog import ingest_shared
    from servecast.store import Store

    store = Store(path)
    ingest_shared(store, ("azure_vm_noise",))
    return store
