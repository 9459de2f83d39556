"""Schema migration: a store written with schema version 1 (no latency columns in
`llm_requests`), 2 (`llm_requests` one wide table) or 3 (a view over a full and a narrow
part, no one-pass parts) is upgraded in place on open, every row and value kept,
idempotently; version 4 adds the registry of one-pass parts."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest

from servecast.datasets.catalog import shared_path
from servecast.errors import ServecastError
from servecast.schema import PARTS_TABLES, SCHEMA_VERSION, SPLIT_TABLES, columns, spec, view_sql
from servecast.store import Store

#: `llm_requests` as schema version 1 shipped it (frozen: the layout old stores have)
V1_LLM_REQUESTS = [
    "trace", "request_id", "arrival_s", "session_id", "turn", "model", "log_type",
    "prompt_tokens", "output_tokens", "elapsed_s", "failed", "prefix_hashes", "prompt_text",
    "response_text",
]
LATENCY = ["ttft_s", "tpot_s", "queue_s", "status", "error"]
#: `llm_requests` of schema version 2: one table, the latency columns appended
LAYOUTS = {1: V1_LLM_REQUESTS, 2: V1_LLM_REQUESTS + LATENCY}
PARTS = SPLIT_TABLES["llm_requests"][:3]  # full, narrow, the narrow part's trace ids
REGISTRY = PARTS_TABLES["llm_requests"]


def _old_store(path, data, version: int) -> None:
    """A store of schema `version` holding real traces: ingested with this servecast (small
    files: no one-pass part), then taken back to that version's layout (versions 1-2:
    `llm_requests` one table of its columns, filled from the view, the parts and the view
    dropped; version 3: the registry of one-pass parts dropped, the view rebuilt without
    it); the version recorded."""
    with Store(path) as store:
        store.ingest("azure-llm", shared_path(
            "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv", data), trace="code")
        store.ingest("mooncake", shared_path("llm/mooncake", data), trace="mooncake")
        store.ingest("burstgpt", shared_path("llm/burstgpt", data), trace="burst")
    con = duckdb.connect(str(path))
    assert con.execute(f"SELECT count(*) FROM {REGISTRY}").fetchall() == [(0,)]
    cols = LAYOUTS.get(version, [c for c, _ in columns("llm_requests")])
    if version < 3:
        con.execute(f"CREATE TABLE _old ({spec('llm_requests', cols)})")
        con.execute(f"INSERT INTO _old SELECT {', '.join(cols)} FROM llm_requests")
    con.execute("DROP VIEW llm_requests")
    for table in [REGISTRY, *(PARTS if version < 3 else ())]:
        con.execute(f"DROP TABLE {table}")
    con.execute("ALTER TABLE _old RENAME TO llm_requests" if version < 3 else
                view_sql("llm_requests"))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version)])
    described = [r[0] for r in con.execute("DESCRIBE llm_requests").fetchall()]
    con.close()
    assert described == cols


def _snapshot(path) -> dict:
    """Every row of every table but `meta` (sorted; `llm_requests`, a table or the view over
    its parts, in its version-1 columns)."""
    con = duckdb.connect(str(path), read_only=True)
    out = {}
    tables = [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE table_name <> 'meta'").fetchall()
        if not t.startswith("llm_requests_")]  # the view's parts: read through it
    for table in sorted({*tables, "llm_requests"}):
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


@pytest.mark.parametrize(("version", "read_only"),
                         [(1, False), (1, True), (2, False), (3, False)])
def test_old_store_upgrades_in_place_and_keeps_every_row(tmp_path, data, version, read_only):
    db = tmp_path / "old.duckdb"
    _old_store(db, data, version)
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
        # an old table became the full part, rows in place; the narrow part starts empty
        parts = [store.con.execute(f"SELECT count(*) FROM {p}").fetchall()[0][0]
                 for p in (*PARTS, REGISTRY)]
        assert parts == ([8819 + 12031 + 54, 0, 0, 0] if version < 3 else
                         [12031 + 54, 8819, 1, 0])
    assert _version(db) == str(SCHEMA_VERSION) == "4"
    assert _snapshot(db) == before  # every row and value survived
    with Store(db) as store:  # idempotent: opening again changes nothing
        store.ingest("azure-llm", shared_path(
            "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", data), trace="conv")
        # a source of the narrow columns only lands in the narrow part (a small file:
        # no one-pass part of its own)
        core = store.con.execute(f"SELECT DISTINCT trace FROM {PARTS[1]} JOIN {PARTS[2]} "
                                 "USING (trace_id) ORDER BY 1").fetchall()
        assert core == [*([("code",)] if version == 3 else []), ("conv",)]
        assert store.remove_trace("code") == 8819  # removed from the part it lives in
    after = _snapshot(db)
    assert len(after["llm_requests"]) == len(before["llm_requests"]) + 19366 - 8819
    assert set(after["llm_requests"]) - set(before["llm_requests"]) == {
        r for r in after["llm_requests"] if r.startswith("('conv'")}


def test_cli_reads_an_upgraded_v1_store(tmp_path, data):
    db = tmp_path / "v1.duckdb"
    _old_store(db, data, 1)
    proc = subprocess.run([sys.executable, "-m", "servecast.cli", "traces", "--db", str(db)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "mooncake" in proc.stdout and "12031" in proc.stdout.replace(",", "")
    assert _version(db) == str(SCHEMA_VERSION)


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
