"""One-pass ingest of Azure LLM traces (`requests.insert_csv_direct`): a clean file (of
at least the adapter's `one_pass_bytes`; 0 here, so that real small files take it) goes
straight from DuckDB's reader into a one-pass part of `llm_requests` of its own, read with
exactly the values the staged read stores; any file it would not store whole (a bad row, a blank
line, an arrival before the first row's) is read through the stage instead, every row
accounted for and each bad one rejected with its line and reason."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from servecast.datasets import get_adapter
from servecast.datasets.azure_llm import AzureLLM
from servecast.datasets.catalog import shared_path
from servecast.schema import PARTS_TABLES
from servecast.store import LoadContext, Store

REGISTRY = PARTS_TABLES["llm_requests"]
ONE_PASS = AzureLLM(one_pass_bytes=0)  # every clean file in one pass, however small
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROWS = ["2024-05-10 00:00:00.500000+00:00,120,30", "2024-05-10 00:00:01.250000+00:00,80,0",
        "2024-05-10 00:00:02+00:00,4000,200", "2024-05-10 00:00:03.125+00:00,10,5"]


def _staged(store: Store) -> bool:
    """Whether the last ingest on this connection read a file through the stage."""
    return store.con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = '_stage'").fetchall()[0][0] > 0


def _rows(store: Store, trace: str) -> list[tuple]:
    return store.con.execute(
        "SELECT * FROM llm_requests WHERE trace = ? ORDER BY request_id", [trace]).fetchall()


@pytest.mark.parametrize("name", ["AzureLLMInferenceTrace_code.csv",
                                  "AzureLLMInferenceTrace_conv.csv"])
def test_one_pass_stores_what_the_stage_stores(tmp_path, data, name):
    f = shared_path(f"llm/azure_llm_2023/{name}", data)
    with Store(tmp_path / "one.duckdb") as store:
        result = store.ingest(ONE_PASS, f, trace="t")
        assert not _staged(store)  # the clean file took the one pass
        one = _rows(store, "t")
        assert _parts(store) == [("llm_requests_part0", "t", 0, len(one))]
        assert store.con.execute("SELECT count(*) FROM llm_requests_part0").fetchall() == [
            (len(one),)]
    with Store(tmp_path / "staged.duckdb") as store, store.transaction() as con:
        ctx = LoadContext(con, "t", "azure-llm", staged={f})
        counts = get_adapter("azure-llm").load(ctx, [f])
        assert _staged(store)
        staged = _rows(store, "t")
    assert counts == {f: (result.rows, 0)}
    assert result.rows == len(one) == len(staged) > 8000
    assert one == staged  # every value, bit for bit
    assert [r[1] for r in one] == list(range(len(one)))  # file order
    assert min(r[2] for r in one) == one[0][2] == 0.0


@pytest.mark.parametrize(("lines", "rejected"), [
    # a blank line: no row, no rejection (the reader skips it), numbering as the stage's
    (ROWS[:2] + [""] + ROWS[2:], []),
    (ROWS[:1] + ["2024-05-10 00:00:00.900000+00:00,12.5,3"] + ROWS[1:],
     [(3, "fractional prompt token count")]),
    (ROWS[:2] + ["2024-05-10 00:00:01.500000+00:00,-4,3"] + ROWS[2:],
     [(4, "negative prompt token count")]),
    (ROWS[:3] + ["yesterday,12,3"] + ROWS[3:], [(5, "TIMESTAMP is not a date-time")]),
    # the checks the table enforces itself (NOT NULL, the cast to INTEGER) fail the pass
    (ROWS[:1] + ["2024-05-10 00:00:00.900000+00:00,,3"] + ROWS[1:],
     [(3, "missing prompt token count")]),
    (ROWS[:1] + ["2024-05-10 00:00:00.900000+00:00,12,nan"] + ROWS[1:],
     [(3, "non-finite output token count")]),
    (ROWS[:1] + ["2024-05-10 00:00:00.900000+00:00,inf,3"] + ROWS[1:],
     [(3, "non-finite prompt token count")]),
    (ROWS[:1] + ["2024-05-10 00:00:00.900000+00:00,3e9,3"] + ROWS[1:],
     [(3, "prompt token count above 2,147,483,647")]),
    (ROWS[:3] + ["2024-05-10 00:00:02.500000+00:00,12,3,99"] + ROWS[3:],
     [(5, "TOO MANY COLUMNS")]),
    # the first row is not the earliest: the origin is the earliest arrival, as staged
    (ROWS[1:2] + ROWS[:1] + ROWS[2:], []),
])
def test_a_file_that_is_not_clean_is_read_through_the_stage(tmp_path, lines, rejected):
    csv = tmp_path / "AzureLLMInferenceTrace_x.csv"
    csv.write_text(HEADER + "\n".join(lines) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest(ONE_PASS, csv)
        assert _staged(store)
        got = store.con.execute("SELECT line, reason FROM rejected_rows").fetchall()
        rows = _rows(store, "AzureLLMInferenceTrace_x")
    assert (result.rows, result.rejected) == (4, len(rejected))
    assert [(line, reason.split(":")[0].split(";")[0]) for line, reason in got] == rejected
    assert min(r[2] for r in rows) == 0.0
    assert sorted(r[7] for r in rows) == [10, 80, 120, 4000]  # prompt_tokens


def test_one_pass_reingest_is_skipped_and_rerun_counts_match(tmp_path, data):
    f = shared_path("llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv", data)
    copy = tmp_path / "AzureLLMInferenceTrace_code2.csv"
    shutil.copy(f, copy)
    with Store(tmp_path / "s.duckdb") as store:
        first = store.ingest(ONE_PASS, [f, copy], trace="both")
        again = store.ingest(ONE_PASS, f)
        n = store.con.execute("SELECT count(*), max(request_id) FROM llm_requests").fetchall()
    # identical files inside one group are both loaded, numbered on from the first
    assert [r.rows for r in first.files] == [8819, 8819]
    assert n == [(2 * 8819, 2 * 8819 - 1)]
    assert again.skipped and again.rows == 0


def test_parts_are_dropped_whole_and_a_reingest_numbers_from_zero(tmp_path, data):
    """Removing a trace drops its one-pass part and rebuilds the view; the file ingested
    again gets a new part with the same ids and values, and reopening the store (a
    checkpoint) keeps them: ids are the parts' row ids, never rewritten."""
    code = shared_path("llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv", data)
    conv = shared_path("llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", data)
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest(ONE_PASS, [code, conv])
        before = _rows(store, "AzureLLMInferenceTrace_code")
        conv_rows = _rows(store, "AzureLLMInferenceTrace_conv")
        assert _parts(store) == [
            ("llm_requests_part0", "AzureLLMInferenceTrace_code", 0, 8819),
            ("llm_requests_part1", "AzureLLMInferenceTrace_conv", 0, 19366)]
        assert store.remove_trace("AzureLLMInferenceTrace_code") == 8819
        assert _parts(store) == [("llm_requests_part1", "AzureLLMInferenceTrace_conv", 0,
                                  19366)]
        assert not store.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name "
                                     "= 'llm_requests_part0'").fetchall()[0][0]
        assert store.con.execute("SELECT count(*) FROM llm_requests").fetchall() == [(19366,)]
        again = store.ingest(ONE_PASS, code)
        assert (again.rows, again.skipped) == (8819, [])
    with Store(tmp_path / "s.duckdb", read_only=True) as store:
        assert _rows(store, "AzureLLMInferenceTrace_code") == before
        assert _rows(store, "AzureLLMInferenceTrace_conv") == conv_rows
        assert store.requests("AzureLLMInferenceTrace_conv").count("*").fetchall() == [(19366,)]


def test_a_trace_of_a_clean_and_an_unclean_file_numbers_on_across_parts(tmp_path):
    """One trace from two files: the clean one in a one-pass part, the one with a bad row
    through the stage into the narrow part; ids run on from the part's rows in the same
    transaction (the registry's count, not the part's row ids there); the staged file
    keeps its rows' places, the rejected one's id left out."""
    clean = _small_file(tmp_path)
    bad = tmp_path / "AzureLLMInferenceTrace_bad.csv"
    bad.write_text(HEADER + "\n".join(ROWS[:1] + ["2024-05-10 00:00:00.900000+00:00,-4,3"]
                                      + ROWS[1:]) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest(ONE_PASS, [clean, bad], trace="both")
        rows = _rows(store, "both")
        assert [p[1:] for p in _parts(store)] == [("both", 0, 4)]
    assert (result.rows, result.rejected) == (8, 1)
    assert [r[1] for r in rows] == [0, 1, 2, 3, 4, 6, 7, 8]
    assert [r[7] for r in rows] == [120, 80, 4000, 10] * 2  # prompt tokens, file order


def test_small_files_go_through_the_stage_not_into_parts_of_their_own(tmp_path):
    """By default a file under ONE_PASS_MIN_BYTES is read through the stage into the shared
    narrow part: a folder of small files adds no table and no view branch per file."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):
        (folder / f"AzureLLMInferenceTrace_{i}.csv").write_text(HEADER + "\n".join(ROWS) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest("azure-llm", folder, trace="many")
        assert _staged(store) and _parts(store) == []
        rows = _rows(store, "many")
    assert (result.rows, result.rejected) == (12, 0)
    assert [r[1] for r in rows] == list(range(12))


@pytest.mark.parametrize("trace", ["many", None])
def test_a_folder_of_one_pass_files_rebuilds_the_view_once(tmp_path, monkeypatch, trace):
    """Three clean files at the one-pass threshold (lowered to their size through the
    adapter's `one_pass_bytes`) in one ingest, as one trace or one trace per file: three
    parts, the `llm_requests` view rebuilt once after the last (not once per part), with
    the rows and request ids the stage gives the same files."""
    from servecast import schema

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):  # distinct rows per file: prompt tokens shifted by the file's number
        rows = [r.rsplit(",", 2) for r in ROWS]
        (folder / f"AzureLLMInferenceTrace_{i}.csv").write_text(HEADER + "\n".join(
            f"{ts},{int(p) + i},{o}" for ts, p, o in rows) + "\n")
    smallest = min(f.stat().st_size for f in folder.iterdir())
    rebuilt = []
    real = schema.view_sql

    def counted(table, parts=(), verb="CREATE VIEW"):
        rebuilt.append((table, verb, len(parts)))
        return real(table, parts, verb)

    with Store(tmp_path / "one.duckdb") as store:
        monkeypatch.setattr(schema, "view_sql", counted)  # refresh_view's statement
        result = store.ingest(AzureLLM(one_pass_bytes=smallest), folder, trace=trace)
        monkeypatch.undo()
        assert not _staged(store) and len(_parts(store)) == 3
        traces = sorted({t for _, t, _, _ in _parts(store)})
        one = {t: _rows(store, t) for t in traces}
    assert rebuilt == [("llm_requests", "CREATE OR REPLACE VIEW", 3)]
    with Store(tmp_path / "staged.duckdb") as store:  # the default threshold: staged
        assert store.ingest("azure-llm", folder, trace=trace).rows == result.rows == 12
        assert _staged(store) and _parts(store) == []
        assert {t: _rows(store, t) for t in traces} == one
    ids = [[r[1] for r in rows] for rows in one.values()]
    assert ids == ([list(range(12))] if trace else [list(range(4))] * 3)


def _parts(store: Store) -> list[tuple]:
    """(part, trace, first_id, rows) of each one-pass part, by part name."""
    return store.con.execute(
        f"SELECT part, trace, first_id, rows FROM {REGISTRY} ORDER BY part").fetchall()


@pytest.mark.slow
def test_one_pass_numbers_a_file_read_in_parallel_in_file_order(tmp_path):
    """A file of many reader buffers (2M rows, 80 MB: one pass by default), read on
    several threads: every request id is the row's place in the file (row i: i + 1 prompt
    tokens, arrival i ms)."""
    n = 2_000_000
    csv = tmp_path / "AzureLLMInferenceTrace_big.csv"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT strftime(TIMESTAMPTZ '2024-05-10 00:00:00+00'
                                          + to_microseconds(i * 1000),
                                          '%Y-%m-%d %H:%M:%S.%f+00:00') AS TIMESTAMP,
                                 i + 1 AS ContextTokens, (i * 7919) % 500 AS GeneratedTokens
                          FROM range({n}) r(i)) TO '{csv}' (HEADER)""")
    con.close()
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest("azure-llm", _small_file(tmp_path), trace="small")  # staged: small
        result = store.ingest("azure-llm", csv)
        assert _parts(store) == [("llm_requests_part0", "AzureLLMInferenceTrace_big", 0, n)]
        got = store.con.execute(
            """SELECT count(*), count(DISTINCT request_id), min(request_id), max(request_id),
                      count(*) FILTER (WHERE prompt_tokens <> request_id + 1
                                       OR abs(arrival_s - request_id / 1000) > 1e-6
                                       OR failed <> (output_tokens = 0))
               FROM llm_requests WHERE trace = 'AzureLLMInferenceTrace_big'""").fetchall()
    assert (result.rows, result.rejected) == (n, 0)
    assert got == [(n, n, 0, n - 1, 0)]


def _small_file(folder):
    """A small clean Azure file in `folder`."""
    f = folder / "AzureLLMInferenceTrace_small.csv"
    f.write_text(HEADER + "\n".join(ROWS) + "\n")
    return f
