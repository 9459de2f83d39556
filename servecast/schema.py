"""Canonical tables of the store (ARCHITECTURE.md). Units: seconds, tokens, ms, MiB, GB/s."""

from __future__ import annotations

from functools import cache

#: version of the table layout, recorded in `meta`; `Store` upgrades an older store in place
#: (MIGRATIONS) and refuses a newer one
SCHEMA_VERSION = 4

TABLES: dict[str, str] = {
    "meta": "key VARCHAR PRIMARY KEY, value VARCHAR",
    # one row per ingested file
    "traces": """
        trace VARCHAR NOT NULL, source VARCHAR NOT NULL, table_name VARCHAR NOT NULL,
        file VARCHAR NOT NULL, sha256 VARCHAR NOT NULL, rows BIGINT NOT NULL,
        rejected BIGINT NOT NULL, ingested_at TIMESTAMP NOT NULL""",
    "rejected_rows": """
        trace VARCHAR NOT NULL, file VARCHAR NOT NULL, line BIGINT, reason VARCHAR NOT NULL,
        content VARCHAR""",
    # latencies in seconds: elapsed_s end to end (arrival to last token), ttft_s to the first
    # token, tpot_s the mean gap between output tokens after the first, queue_s waiting before
    # service; status / error as the source wrote them; NULL where a source has no such field
    "llm_requests": """
        trace VARCHAR NOT NULL, request_id BIGINT NOT NULL, arrival_s DOUBLE,
        session_id VARCHAR, turn INTEGER, model VARCHAR, log_type VARCHAR,
        prompt_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, elapsed_s DOUBLE,
        failed BOOLEAN NOT NULL, prefix_hashes INTEGER[], prompt_text VARCHAR,
        response_text VARCHAR, ttft_s DOUBLE, tpot_s DOUBLE, queue_s DOUBLE, status VARCHAR,
        error VARCHAR""",
    # batch jobs / tasks / pods / serving instances; times in seconds since the trace origin
    "cluster_jobs": """
        trace VARCHAR NOT NULL, job_id VARCHAR NOT NULL, task_id VARCHAR, app VARCHAR,
        role VARCHAR, status VARCHAR, qos VARCHAR, submit_s DOUBLE, start_s DOUBLE,
        end_s DOUBLE, duration_s DOUBLE, num_instances BIGINT, cpu_request DOUBLE,
        memory_request DOUBLE, gpu_request DOUBLE, gpu_model VARCHAR, extra JSON""",
    # per-minute (or other period) cluster-level series in long form
    "cluster_series": """
        trace VARCHAR NOT NULL, series VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
        metric VARCHAR NOT NULL, value DOUBLE""",
    "cluster_nodes": """
        trace VARCHAR NOT NULL, node_id VARCHAR NOT NULL, cpu_cores DOUBLE, memory_mib DOUBLE,
        gpus INTEGER, gpu_model VARCHAR, inventory VARCHAR""",
    "vm_measurements": """
        trace VARCHAR NOT NULL, test_suite VARCHAR NOT NULL, test_name VARCHAR NOT NULL,
        vm_lifespan VARCHAR, vm_region VARCHAR, vm_sku VARCHAR, unit VARCHAR,
        vm_id BIGINT NOT NULL, start_time TIMESTAMP, runtime_s DOUBLE, value DOUBLE NOT NULL""",
    # one measured kernel/operator/architecture latency; shape columns NULL where not applicable
    "kernel_latencies": """
        trace VARCHAR NOT NULL, source VARCHAR NOT NULL, device VARCHAR NOT NULL,
        op VARCHAR NOT NULL, B BIGINT, M BIGINT, N BIGINT, K BIGINT, H BIGINT,
        in_channels BIGINT, out_channels BIGINT, kernel_size BIGINT, input_size BIGINT,
        stride BIGINT, padding BIGINT, arch_index BIGINT, model VARCHAR, num_tokens BIGINT,
        tp INTEGER, latency_ms DOUBLE NOT NULL, latency_std_ms DOUBLE, extra JSON,
        kv_heads BIGINT, head_dim BIGINT, dtype VARCHAR, kv_dtype VARCHAR, engine VARCHAR,
        engine_version VARCHAR""",
    # device spec sheets (NeuSight device-config keys)
    "devices": """
        device VARCHAR NOT NULL, source VARCHAR, Dev_Mem DOUBLE, Mem_Bw DOUBLE, Num_Sm INTEGER,
        Core_Per_SM INTEGER, Freq DOUBLE, SingleFLOPs DOUBLE, L2Cache DOUBLE, spec JSON""",
    "architectures": "trace VARCHAR NOT NULL, arch_index BIGINT NOT NULL, arch VARCHAR NOT NULL",
    # named lists of a benchmark protocol (e.g. HELP's meta_train / meta_valid devices)
    "benchmark_splits": "trace VARCHAR NOT NULL, split VARCHAR NOT NULL, item VARCHAR NOT NULL",
    # measured latency of whole batches / engine steps / model forwards (ms), per engine
    "serving_latencies": """
        trace VARCHAR NOT NULL, source VARCHAR NOT NULL, model VARCHAR NOT NULL,
        device VARCHAR NOT NULL, num_gpus INTEGER, engine VARCHAR, batch_size BIGINT,
        prompt_tokens BIGINT, output_tokens BIGINT, latency_ms DOUBLE, prompt_ms DOUBLE,
        token_ms DOUBLE, throughput_tps DOUBLE, extra JSON""",
    # a model's operator graph (NeuSight op graphs): one node per row, its forward / backward
    # ops with their shapes as the source writes them; `run` names the traced configuration
    "op_graphs": """
        trace VARCHAR NOT NULL, model VARCHAR NOT NULL, run VARCHAR NOT NULL,
        name VARCHAR NOT NULL, op_name VARCHAR, fw_ops VARCHAR, bw_ops VARCHAR,
        input_shapes VARCHAR, output_shape VARCHAR""",
    # one co-location run (NTUA interference study): the service's load and latency (s)
    "interference_runs": """
        trace VARCHAR NOT NULL, series VARCHAR NOT NULL, test_id VARCHAR NOT NULL,
        replicas VARCHAR NOT NULL, interference VARCHAR NOT NULL, interference_id INTEGER NOT NULL,
        family VARCHAR NOT NULL, pods INTEGER NOT NULL, rps DOUBLE NOT NULL, throughput DOUBLE,
        avg_latency_s DOUBLE NOT NULL, p50_latency_s DOUBLE, p90_latency_s DOUBLE,
        p95_latency_s DOUBLE, p99_latency_s DOUBLE, max_latency_s DOUBLE, errors BIGINT,
        samples INTEGER NOT NULL""",
    # host counters of a run, long: sample index (5 s apart), metric ('sys:IPC', 'core3:L3MISS')
    "interference_samples": """
        trace VARCHAR NOT NULL, series VARCHAR NOT NULL, test_id VARCHAR NOT NULL,
        sample INTEGER NOT NULL, metric VARCHAR NOT NULL, value DOUBLE""",
    # MLPerf Inference results, one row per submitter x system x benchmark x scenario:
    # TTFT / TPOT and their p99 limits in ms, end-to-end latencies in s, memory in GB
    "mlperf_results": """
        trace VARCHAR NOT NULL, round VARCHAR, division VARCHAR, submitter VARCHAR NOT NULL,
        system VARCHAR NOT NULL, benchmark VARCHAR NOT NULL, scenario VARCHAR NOT NULL,
        valid VARCHAR, accelerator VARCHAR, accelerators_per_node INTEGER, nodes INTEGER,
        accelerator_memory_gb DOUBLE, framework VARCHAR, samples_per_s DOUBLE,
        tokens_per_s DOUBLE, target_qps DOUBLE, scheduled_qps DOUBLE, mean_latency_s DOUBLE,
        p99_latency_s DOUBLE, mean_ttft_ms DOUBLE, p50_ttft_ms DOUBLE, p90_ttft_ms DOUBLE,
        p99_ttft_ms DOUBLE, mean_tpot_ms DOUBLE, p50_tpot_ms DOUBLE, p90_tpot_ms DOUBLE,
        p99_tpot_ms DOUBLE, ttft_limit_ms DOUBLE, tpot_limit_ms DOUBLE""",
    "moe_expert_loads": """
        trace VARCHAR NOT NULL, model VARCHAR NOT NULL, checkpoint VARCHAR, assignment VARCHAR,
        domain VARCHAR, layer INTEGER NOT NULL, expert INTEGER NOT NULL, tokens BIGINT NOT NULL""",
    # host metrics sampled here (`servecast collect host-metrics` / `collect interference`),
    # long form: t in seconds since the sampling (or the window's run) started; window_id
    # NULL for a plain recording
    "host_metrics": """
        trace VARCHAR NOT NULL, window_id BIGINT, t DOUBLE NOT NULL, metric VARCHAR NOT NULL,
        value DOUBLE""",
}

#: nullable columns added after a table first shipped: `Store` adds them to older stores
#: (ALTER TABLE ... ADD COLUMN), so those keep working without a schema version bump
ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "kernel_latencies": [("kv_heads", "BIGINT"), ("head_dim", "BIGINT"), ("dtype", "VARCHAR"),
                         ("kv_dtype", "VARCHAR"), ("engine", "VARCHAR"),
                         ("engine_version", "VARCHAR")],
}

#: schema version -> the nullable columns it appended to existing tables (table, column,
#: type), in table order: `Store` upgrades an older store by adding them in one transaction
#: (ALTER TABLE ... ADD COLUMN; rows and values untouched) and records the new version
MIGRATIONS: dict[int, list[tuple[str, str, str]]] = {
    2: [("llm_requests", "ttft_s", "DOUBLE"), ("llm_requests", "tpot_s", "DOUBLE"),
        ("llm_requests", "queue_s", "DOUBLE"), ("llm_requests", "status", "VARCHAR"),
        ("llm_requests", "error", "VARCHAR")],
}

#: canonical tables stored in physical parts and read through a view of their name:
#: table -> (the part with every column, the narrow part, the narrow part's table of trace
#: ids, the canonical columns the narrow part holds). A source that fills only the narrow
#: columns (Azure's timestamp and two token counts) is written to the narrow part: DuckDB
#: spends as much CPU writing the 13 all-NULL columns of the full layout as writing the
#: rest. The narrow part keeps its trace as an INTEGER `trace_id` (the ids table maps it to
#: the name): a constant string on every row costs DuckDB a write, a constant number next
#: to nothing. Readers see one table with every column (the view: NULL where the narrow
#: part has no such column); adapters insert through `requests.insert_requests`, which
#: picks the part.
SPLIT_TABLES: dict[str, tuple[str, str, str, list[str]]] = {
    "llm_requests": ("llm_requests_full", "llm_requests_core", "llm_requests_core_traces",
                     ["trace", "request_id", "arrival_s", "prompt_tokens", "output_tokens",
                      "failed"]),
}

#: split table -> its registry of one-pass parts (schema version 4). A clean file read in
#: one pass (`requests.insert_csv_direct`) is written to a new table of its own, the part,
#: in file order; its request ids are not stored: they are the part's row ids plus the
#: registry's `first_id`, and its `failed` flag is the registry's predicate over the
#: part's columns, both computed in the view. Row ids of a table that has only ever been
#: appended to in one statement are 0..rows-1 in insert order, so the INVARIANT: a part is
#: never updated, deleted from or appended to after its ingest; removing its trace drops
#: the whole table (and its registry row), and the view is rebuilt (`refresh_view`).
#: Inside the ingest's transaction DuckDB numbers a new table's rows from a large offset:
#: code that needs a trace's next id there reads the registry's `rows` (`next_id_sql`).
PARTS_TABLES: dict[str, str] = {"llm_requests": "llm_requests_parts"}
PARTS_SPEC = """part VARCHAR NOT NULL, trace VARCHAR NOT NULL, first_id BIGINT NOT NULL,
    rows BIGINT NOT NULL, failed VARCHAR NOT NULL, columns VARCHAR NOT NULL"""


def columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of each column of canonical `table`, in table order."""
    out = []
    for col in TABLES[table].replace("\n", " ").split(","):
        name, typ = col.split()[:2]
        out.append((name, typ))
    return out


def spec(table: str, keep: list[str]) -> str:
    """Column definitions of canonical `table` restricted to `keep` (constraints kept)."""
    defs = [" ".join(c.split()) for c in TABLES[table].replace("\n", " ").split(",")]
    return ", ".join(d for d in defs if d.split()[0] in keep)


@cache
def physical_tables() -> dict[str, str]:
    """Name -> column definitions of every table a new store is created with: TABLES, with
    each split table replaced by its full and narrow parts, their table of trace ids and
    the registry of one-pass parts (the one-pass parts themselves come and go with the
    traces: not listed). Computed once; do not modify the result."""
    out: dict[str, str] = {}
    for name, cols in TABLES.items():
        if name in SPLIT_TABLES:
            full, core, ids, keep = SPLIT_TABLES[name]
            out[full] = cols
            out[core] = "trace_id INTEGER NOT NULL, " + spec(name, [c for c in keep
                                                                    if c != "trace"])
            out[ids] = "trace_id INTEGER NOT NULL, trace VARCHAR NOT NULL"
            out[PARTS_TABLES[name]] = PARTS_SPEC
        else:
            out[name] = cols
    return out


def view_sql(table: str, parts: list[tuple] = (), verb: str = "CREATE VIEW") -> str:
    """`verb` (CREATE VIEW, CREATE OR REPLACE VIEW, ...) statement of split `table`: its
    parts' rows with every canonical column, in table order (NULL of the column's type
    where a part lacks it). `parts`: the registry's rows of one-pass parts, (part, trace,
    first_id, rows, failed, columns), see PARTS_TABLES."""
    full, core, ids, keep = SPLIT_TABLES[table]
    cols = columns(table)

    def select(have, **computed) -> str:
        return ", ".join(computed[n] + f" AS {n}" if n in computed else
                         n if n in have else f"NULL::{t} AS {n}" for n, t in cols)

    branches = [f"SELECT {', '.join(n for n, _ in cols)} FROM {full}",
                f"SELECT {select(keep)} FROM {core} JOIN {ids} USING (trace_id)"]
    for part, trace, first_id, _, failed, have in parts:
        quoted = "'" + trace.replace("'", "''") + "'"
        computed = select(have.split(","), trace=quoted, failed=f"({failed})",
                          request_id=f"{int(first_id)} + rowid")
        branches.append(f"SELECT {computed} FROM {part}")
    return f"{verb} {table} AS " + " UNION ALL ".join(branches)


def refresh_view(con, table: str) -> None:
    """Rebuild the view of split `table` over its parts as the registry lists them now
    (after a one-pass part is added or dropped; in the caller's transaction)."""
    parts = con.execute(f"SELECT * FROM {PARTS_TABLES[table]} ORDER BY part").fetchall()
    con.execute(view_sql(table, parts, "CREATE OR REPLACE VIEW"))


def next_id_sql(table: str) -> str:
    """SQL of the first free request_id of trace `$1` in split `table`, from the stored
    ids of its full and narrow parts and the registry's `first_id + rows` of its one-pass
    parts (correct inside the transaction that wrote them, unlike their row ids)."""
    full, core, ids, _ = SPLIT_TABLES[table]
    return f"""SELECT greatest(
        (SELECT coalesce(max(request_id) + 1, 0) FROM {full} WHERE trace = $1),
        (SELECT coalesce(max(request_id) + 1, 0) FROM {core}
         WHERE trace_id IN (SELECT trace_id FROM {ids} WHERE trace = $1)),
        (SELECT coalesce(max(first_id + rows), 0) FROM {PARTS_TABLES[table]}
         WHERE trace = $1))"""


def part_for(table: str, cols: list[str]) -> str:
    """The physical table an insert of `cols` into canonical `table` goes to: the narrow
    part of a split table when it has every one of `cols`, else the full one."""
    if table not in SPLIT_TABLES:
        return table
    full, core, _, keep = SPLIT_TABLES[table]
    return core if set(cols) <= set(keep) else full


def trace_ids(part: str) -> str | None:
    """The table of trace ids of narrow part `part` (None for any other table)."""
    return next((ids for _, core, ids, _ in SPLIT_TABLES.values() if core == part), None)


def of_trace(table: str) -> str | None:
    """SQL condition selecting the rows of trace `?` in physical `table` (None: the table
    has no trace column)."""
    ids = trace_ids(table)
    if ids:
        return f"trace_id IN (SELECT trace_id FROM {ids} WHERE trace = ?)"
    return "trace = ?" if "trace VARCHAR" in physical_tables()[table] else None


#: schema version -> SQL run after that version's MIGRATIONS columns, in the same transaction
#: (version 3: the `llm_requests` table becomes the full part, renamed with every row and
#: value in place, and `llm_requests` the view over it and a new, empty narrow part with
#: its table of trace ids; version 4: the empty registry of one-pass parts, PARTS_TABLES)
MIGRATION_STATEMENTS: dict[int, list[str]] = {
    3: ["ALTER TABLE llm_requests RENAME TO llm_requests_full",
        *(f"CREATE TABLE {t} ({physical_tables()[t]})" for t in SPLIT_TABLES["llm_requests"][1:3]),
        view_sql("llm_requests")],
    4: [f"CREATE TABLE {PARTS_TABLES['llm_requests']} ({PARTS_SPEC})"],
}

#: physical tables holding a trace's data rows (`traces remove` deletes from each, then the
#: trace's ids in TRACE_ID_TABLES; its one-pass parts are dropped whole)
TRACE_ID_TABLES = [ids for _, _, ids, _ in SPLIT_TABLES.values()]
DATA_TABLES = [t for t in physical_tables() if t not in (
    "meta", "traces", "rejected_rows", *TRACE_ID_TABLES, *PARTS_TABLES.values())]

