"""Shared fixtures: the real-data folder and one store with every shared dataset ingested."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servecast.config import data_dir


@pytest.fixture(scope="session")
def data() -> Path:
    """The shared real-data folder (`$SERVECAST_DATA` or ../shared/datasets)."""
    d = data_dir()
    if not d.is_dir():
        pytest.fail(f"real data folder {d} missing: set SERVECAST_DATA")
    return d


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory, data):
    """A store with every shared dataset ingested (built once per test session; read it,
    don't write to it: tests that write use their own `Store(tmp_path / ...)`)."""
    from servecast.datasets.catalog import SHARED, shared_path
    from servecast.store import Store

    path = tmp_path_factory.mktemp("store") / "shared.duckdb"
    store = Store(path)
    for source, rel, trace in SHARED:
        store.ingest(source, [shared_path(rel, data)], trace=trace)
    yield store
    store.close()


@pytest.fixture
def tmp_store(tmp_path):
    """An empty store in a temporary folder."""
    from servecast.store import Store

    store = Store(tmp_path / "t.duckdb")
    yield store
    store.close()


os.environ.setdefault("MPLBACKEND", "Agg")
