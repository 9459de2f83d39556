"""Schema migration: a store written with schema version 1 (no latency columns in
`llm_requests`) is upgraded in place on open, every row and value kept, idempotently."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest

from servecast.datasets.catalog import shared_path
from servecast.errors import ServecastError
from servecast.schema import MIGRATIONS, SCHEMA_VERSION, columns
from servecast.store import Store

#: `llm_requests` as schema version 1 shipped it (frozen: the layout old stores have)
V1_LLM_REQUESTS = [
    "trace", "request_id", "arrival_s", "session_id", "turn", "model", "log_type",
    "prompt_tokens", "output_tokens", "elapsed_s", "failed", "prefix_hashes", "prompt_text",
    "response_text",
]
LATENCY = ["ttft_s", "tpot_s", "queue_s", "status", "error"]


def _v1_store(path, data) -> None:
    """A version-1 store holding real traces: ingested with this servecast, then taken back
    to the version-1 layout (the added columns dropped, version 1 recorded)."""
    with Store(path) as store:
        store.ingest("azure-llm", shared_path(
            "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv", data), trace="code")
        store.ingest("mooncake", shared_path("llm/mooncake", data), trace="mooncake")
        store.ingest("burstgpt", shared_path("llm/burstgpt", data), trace="burst")
    con = duckdb.connect(str(path))
    for _, col, _ in MIGRATIONS[2]:
        con.execute(f"ALTER TABLE llm_requests DROP COLUMN {col}")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    cols = [r[0] for r in con.execute("DESCRIBE llm_requests").fetchall()]
    con.close()
    assert cols == V1_LLM_REQUESTS


def _snapshot(path) -> dict:
    """Every row of every table but `meta` (sorted; `llm_requests` in its version-1 columns)."""
    con = duckdb.connect(str(path), read_only=True)
    out = {}
    for (table,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name <> 'meta'").fetchall():
        cols = V1_LLM_REQUESTS if table == "llm_requests" else ["*"]
        out[table] = sorted(map(repr, con.execute(
            f"SELECT {', '.join(cols)} FROM {table}").fetchall()))
    con.close()
    return out


def _version(path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    (v,) = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()[0]
    con.close()
    return v


@pytest.mark.parametrize("read_only", [False, True])
def test_v1_store_upgrades_in_place_and_keeps_every_row(tmp_path, data, read_only):
    db = tmp_path / "v1.duckdb"
    _v1_store(db, data)
    before = _snapshot(db)
    assert len(before["llm_requests"]) == 8819 + 12031 + 54
    with Store(db, read_only=read_only) as store:  # opening upgrades it
        assert [c for c, _ in columns("llm_requests")] == [
            r[0] for r in store.con.execute("DESCRIBE llm_requests").fetchall()]
        nulls = store.con.execute(
            "SELECT " + ", ".join(f"count({c})" for c in LATENCY) + " FROM llm_requests"
        ).fetchall()[0]
        assert nulls == (0,) * len(LATENCY)  # old rows: NULL latency columns
        assert store.requests("code").count("*").fetchall()[0][0] == 8819
    assert _version(db) == str(SCHEMA_VERSION) == "2"
    assert _snapshot(db) == before  # every row and value survived
    with Store(db) as store:  # idempotent: opening again changes nothing
        store.ingest("azure-llm", shared_path(
            "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", data), trace="conv")
    after = _snapshot(db)
    assert len(after["llm_requests"]) == len(before["llm_requests"]) + 19366
    assert set(before["llm_requests"]) <= set(after["llm_requests"])


def test_cli_reads_an_upgraded_v1_store(tmp_path, data):
    db = tmp_path / "v1.duckdb"
    _v1_store(db, data)
    proc = subprocess.run([sys.executable, "-m", "servecast.cli", "traces", "--db", str(db)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "mooncake" in proc.stdout and "12031" in proc.stdout.replace(",", "")
    assert _version(db) == "2"


def test_newer_store_is_refused_untouched(tmp_path):
    db = tmp_path / "new.duckdb"
    Store(db).close()
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                [str(SCHEMA_VERSION + 1)])
    con.close()
    with pytest.raises(ServecastError, match="newer than this servecast"):
        Store(db)
    assert _version(db) == str(SCHEMA_VERSION + 1)
