"""Bad input: each case gives the specified behaviour, and the row counts of every table
before/after prove that nothing was lost or half-written. Fixture files are small synthetic
files written into tmp_path (a known answer per case)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from servecast.errors import (
    DataFileError,
    RejectedRowsError,
    SchemaMismatchError,
    StoreLockedError,
)
from servecast.schema import TABLES
from servecast.store import Store

BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


# -- synthetic files --------------------------------------------------------------------
def burst_lines(n: int, seed: int = 0) -> list[str]:
    """n valid BurstGPT-v1 data lines (distinct per seed)."""
    out = []
    for i in range(n):
        req, resp = 50 + (i * 37 + seed) % 900, (i * 11 + seed) % 300
        model = "GPT-4" if i % 5 == 0 else "ChatGPT"
        out.append(f"{i * 2 + seed},{model},{req},{resp},{req + resp},Conversation log")
    return out


def write(path: Path, lines: list[str], header: str = BURST_HEADER) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def azure_lines(n: int) -> list[str]:
    return [f"2023-11-16 18:{15 + i // 60:02d}:{i % 60:02d}.6805900,{100 + i},{10 + i % 7}"
            for i in range(n)]


def counts(store: Store) -> dict[str, int]:
    """Rows of every table of the store."""
    return {t: store.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {t: after[t] - before[t] for t in TABLES if after[t] != before[t]}


@pytest.fixture
def seeded(tmp_path) -> Store:
    """A store that already holds a trace, so `unchanged` also means `nothing lost`."""
    store = Store(tmp_path / "seeded.duckdb")
    store.ingest("burstgpt", [write(tmp_path / "seed.csv", burst_lines(100, seed=7))])
    yield store
    store.close()


def rejected(store: Store, trace: str) -> list[tuple[int, str]]:
    return store.con.execute(
        "SELECT line, reason FROM rejected_rows WHERE trace = ? ORDER BY line", [trace]).fetchall()


# -- file-level errors: nothing changes ---------------------------------------------------
def test_missing_file(seeded, tmp_path):
    before = counts(seeded)
    good = write(tmp_path / "good.csv", burst_lines(10))
    missing = tmp_path / "nope" / "missing.csv"
    with pytest.raises(DataFileError, match="no such file") as err:
        seeded.ingest("burstgpt", [good, missing])
    assert str(missing) in str(err.value)
    assert counts(seeded) == before


def test_empty_file(seeded, tmp_path):
    before = counts(seeded)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataFileError, match="empty") as err:
        seeded.ingest("burstgpt", [empty])
    assert str(empty) in str(err.value)
    assert counts(seeded) == before


def test_wrong_header_names_file_expected_and_found(seeded, tmp_path):
    """The first (good) file was already staged inside the transaction: it is rolled back."""
    before = counts(seeded)
    good = write(tmp_path / "a_good.csv", azure_lines(30), AZURE_HEADER)
    wrong = write(tmp_path / "b_wrong.csv", ["2023-11-16 18:15:46,374"], "TIMESTAMP,Context")
    with pytest.raises(SchemaMismatchError) as err:
        seeded.ingest("azure-llm", [good, wrong])
    msg = str(err.value)
    assert str(wrong) in msg
    assert "expected columns: TIMESTAMP, ContextTokens, GeneratedTokens" in msg
    assert "found columns:    TIMESTAMP, Context" in msg
    assert counts(seeded) == before


def test_truncated_gzip(seeded, tmp_path):
    before = counts(seeded)
    good = write(tmp_path / "a_good.csv", burst_lines(50, seed=3))
    blob = gzip.compress(("\n".join([BURST_HEADER, *burst_lines(40_000)]) + "\n").encode())
    cut = tmp_path / "b_cut.csv.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match="truncated") as err:
        seeded.ingest("burstgpt", [good, cut], trace="both")
    assert str(cut) in str(err.value)
    assert counts(seeded) == before


# -- row-level problems: rejected with file, line and reason --------------------------------
BAD_ROWS = {
    # source: (header, lines with bad ones at known places, {line: reason fragment})
    "burstgpt": (BURST_HEADER, "csv", {
        501: ("5000,ChatGPT,many,3,3,Conversation log", "request_tokens"),
        1001: ("5001,ChatGPT,-5,3,-2,Conversation log", "negative prompt token count"),
        1002: ("5002,ChatGPT,5,3,8", "Columns"),  # a field missing
    }),
    "azure-llm": (AZURE_HEADER, "csv", {
        12: ("yesterday,10,10", "not a date-time"),
        20: ("2023-11-16 18:15:46.1,10,-3", "negative output token count"),
    }),
    "mooncake": (None, "jsonl", {
        3: ('{"timestamp": 10, "input_len', "not valid JSON"),
        7: ('{"timestamp": 20, "input_length": -5, "output_length": 3, "hash_ids": [1]}',
            "negative prompt token count"),
    }),
}


def file_with_bad_rows(tmp_path: Path, source: str) -> tuple[Path, int, dict]:
    header, kind, bad = BAD_ROWS[source]
    first = 1 if header else 0  # lines taken by the header
    total = max(bad) + 20
    if source == "burstgpt":
        good = burst_lines(total)
    elif source == "azure-llm":
        good = azure_lines(total)
    else:
        good = [json.dumps({"timestamp": i * 100, "input_length": 10 + i, "output_length": 5,
                            "hash_ids": [i, i + 1]}) for i in range(total)]
    lines = good[: total - first]
    for line, (text, _) in bad.items():
        lines[line - first - 1] = text
    path = tmp_path / f"bad_rows.{kind}"
    path.write_text("\n".join([header, *lines] if header else lines) + "\n")
    return path, len(lines), bad


@pytest.mark.parametrize("source", list(BAD_ROWS))
def test_bad_row_in_the_middle_is_rejected_with_its_line(seeded, tmp_path, source):
    path, data_rows, bad = file_with_bad_rows(tmp_path, source)
    before = counts(seeded)
    result = seeded.ingest(source, [path])
    assert (result.rows, result.rejected) == (data_rows - len(bad), len(bad))
    got = rejected(seeded, "bad_rows")
    assert [line for line, _ in got] == sorted(bad)
    for line, reason in got:
        assert bad[line][1] in reason, (line, reason)
    assert delta(before, counts(seeded)) == {
        "traces": 1, "rejected_rows": len(bad), "llm_requests": data_rows - len(bad)}
    # accepted rows keep source order and every good row is present
    (n_ids,) = seeded.con.execute(
        "SELECT count(DISTINCT request_id) FROM llm_requests WHERE trace = 'bad_rows'"
    ).fetchall()[0]
    assert n_ids == data_rows - len(bad)


def test_strict_refuses_the_whole_file(seeded, tmp_path):
    path, data_rows, bad = file_with_bad_rows(tmp_path, "burstgpt")
    before = counts(seeded)
    with pytest.raises(RejectedRowsError) as err:
        seeded.ingest("burstgpt", [path], strict=True)
    msg = str(err.value)
    assert str(path) in msg and "line 501" in msg and "--strict" in msg
    assert counts(seeded) == before
    # the refused file is not marked as ingested: without --strict it loads
    result = seeded.ingest("burstgpt", [path])
    assert (result.rows, result.rejected, result.skipped) == (data_rows - len(bad), len(bad), [])


def test_non_utf8_bytes_are_rejected_with_their_line(seeded, tmp_path):
    lines = [line.encode() for line in burst_lines(60)]
    lines[39] = b"78,Chat\xff\xfeGPT,109,4,113,Conversation log"  # line 41 of the file
    path = tmp_path / "latin.csv"
    path.write_bytes(b"\n".join([BURST_HEADER.encode(), *lines]) + b"\n")
    before = counts(seeded)
    result = seeded.ingest("burstgpt", [path])
    assert (result.rows, result.rejected) == (59, 1)
    [(line, reason)] = rejected(seeded, "latin")
    assert line == 41 and "unicode" in reason.lower()
    assert delta(before, counts(seeded)) == {"traces": 1, "rejected_rows": 1, "llm_requests": 59}


# -- truncated ShareGPT JSON: complete conversations kept, truncation reported -------------
def conversations(n: int) -> list[dict]:
    return [{"id": f"conv{i}", "conversations": [
        {"from": "human", "value": f"question {i} " + "x" * (50 + 13 * i)},
        {"from": "gpt", "value": f"answer {i} " + "y" * (80 + 7 * i)},
        {"from": "human", "value": f"follow-up {i}"},
        {"from": "gpt", "value": f"second answer {i}"},
    ]} for i in range(n)]


def test_truncated_sharegpt_json_keeps_complete_conversations(seeded, tmp_path):
    convs = conversations(5)
    text = json.dumps(convs, indent=1)
    start = text.index('"conv3"')
    record_line = text[: text.rindex("{", 0, start)].count("\n") + 1  # where conv3 begins
    path = tmp_path / "cut.json"
    path.write_text(text[: start + 30])  # cut inside conv3
    before = counts(seeded)
    result = seeded.ingest("sharegpt", [path])
    assert (result.rows, result.rejected) == (3 * 2, 1)
    sessions = seeded.con.execute(
        "SELECT DISTINCT session_id FROM llm_requests WHERE trace = 'cut' ORDER BY 1").fetchall()
    assert [s for (s,) in sessions] == ["conv0", "conv1", "conv2"]
    [(line, reason)] = rejected(seeded, "cut")
    assert line == record_line and "truncated" in reason and "3 complete" in reason
    assert delta(before, counts(seeded)) == {"traces": 1, "rejected_rows": 1, "llm_requests": 6}


def test_truncated_sharegpt_gzip_keeps_complete_conversations(seeded, tmp_path):
    """A .json.gz cut off mid-stream: everything that decompresses is used."""
    convs = conversations(4)
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    blob = comp.compress(b"[")
    for i, conv in enumerate(convs):
        blob += comp.compress((("," if i else "") + json.dumps(conv)).encode())
        blob += comp.flush(zlib.Z_FULL_FLUSH)  # record i is decodable from here on
        if i == 2:
            cut_at = len(blob) + 10  # inside the 4th record's compressed bytes
    blob += comp.compress(b"]") + comp.flush()
    path = tmp_path / "cut.json.gz"
    path.write_bytes(blob[:cut_at])
    before = counts(seeded)
    result = seeded.ingest("sharegpt", [path])
    assert (result.rows, result.rejected) == (3 * 2, 1)
    [(_, reason)] = rejected(seeded, "cut")
    assert "compressed stream ends early" in reason
    assert delta(before, counts(seeded)) == {"traces": 1, "rejected_rows": 1, "llm_requests": 6}


# -- idempotence and concurrency --------------------------------------------------------------
def test_same_file_twice_is_a_noop_that_says_so(seeded, tmp_path):
    path = write(tmp_path / "twice.csv", burst_lines(25, seed=1))
    first = seeded.ingest("burstgpt", [path])
    assert first.rows == 25 and not first.skipped
    before = counts(seeded)
    again = seeded.ingest("burstgpt", [path])
    copy = tmp_path / "renamed_copy.csv"
    copy.write_bytes(path.read_bytes())
    renamed = seeded.ingest("burstgpt", [copy], trace="other_name")
    for res in (again, renamed):
        assert res.rows == 0 and [f.trace for f in res.skipped] == ["twice"]
    assert counts(seeded) == before
    seeded.close()
    cli = subprocess.run(
        [sys.executable, "-m", "servecast.cli", "ingest", "burstgpt", str(path),
         "--db", str(seeded.path)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "already ingested" in cli.stdout and str(path) in " ".join(cli.stdout.split())
    reopened = Store(seeded.path)
    assert counts(reopened) == before
    seeded.con = reopened.con  # the fixture closes it


def test_a_stored_file_among_new_ones_is_skipped(seeded, tmp_path):
    """Hashing runs beside the load; a file found to be stored already (before or after the
    load, whichever finishes first) is skipped and the rest lands once, numbered from 0."""
    a = write(tmp_path / "a.csv", burst_lines(30, seed=2))
    seeded.ingest("burstgpt", [a], trace="first")
    twin = tmp_path / "a_twin.csv"
    twin.write_bytes(a.read_bytes())
    other = write(tmp_path / "b.csv", burst_lines(12, seed=3))
    before = counts(seeded)
    res = seeded.ingest("burstgpt", [twin, other], trace="pair")
    assert res.rows == 12 and [(f.file, f.trace) for f in res.skipped] == [(str(twin), "first")]
    assert delta(before, counts(seeded)) == {"traces": 1, "llm_requests": 12}
    ids = seeded.sql("SELECT request_id FROM llm_requests WHERE trace = 'pair' ORDER BY 1")
    assert ids["request_id"].to_list() == list(range(12))


HOLDER = textwrap.dedent("""
    import sys
    from servecast.store import Store
    store = Store(sys.argv[1])
    result = store.ingest("burstgpt", [sys.argv[2]])
    print("holding", result.rows, flush=True)
    sys.stdin.readline()  # keep the store open until told to stop
    store.close()
""")


def test_second_writer_gets_a_clear_error_and_no_corruption(tmp_path):
    db = tmp_path / "locked.duckdb"
    first = write(tmp_path / "first.csv", burst_lines(300, seed=2))
    second = write(tmp_path / "second.csv", burst_lines(40, seed=9))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(first)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().split() == ["holding", "300"]
        with pytest.raises(StoreLockedError, match="open for writing by another process"):
            Store(db)
        cli = subprocess.run(
            [sys.executable, "-m", "servecast.cli", "ingest", "burstgpt", str(second),
             "--db", str(db)], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 2
        assert "open for writing by another process" in cli.stderr
        assert str(db) in " ".join(cli.stderr.split())
        assert "Traceback" not in cli.stderr + cli.stdout
    finally:
        holder.communicate("stop\n", timeout=60)
    assert holder.returncode == 0
    with Store(db) as store:
        after = counts(store)
        assert {t: n for t, n in after.items() if n} == {
            "meta": 1, "traces": 1, "llm_requests": 300}
        assert store.trace_info("first")["rows"] == 300
        assert store.ingest("burstgpt", [second]).rows == 40  # the store works afterwards


def test_non_finite_cluster_and_vm_values_are_rejected(tmp_path, data):
    """NaN / inf in the real Alibaba 2025 trace's resources and an Azure VM file's values:
    rejected rows with their reason (negative cluster times stay: they precede the origin)."""
    src = data / "cluster/alibaba_gpu_v2025/disaggregated_DLRM_trace.csv"
    lines = src.read_text().splitlines()[:40]
    head, rows = lines[0], lines[1:]
    rows[4] = rows[4].replace(",12,12,", ",nan,12,", 1)
    rows[9] = rows[9].replace(",1,1,", ",inf,1,", 1)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("\n".join([head, *rows]) + "\n")
    vm_src = sorted((data / "vm/azure_vm_noise").rglob("*.csv.gz"))[0]
    vm = tmp_path / vm_src.relative_to(data / "vm")
    vm.parent.mkdir(parents=True)
    text = gzip.decompress(vm_src.read_bytes()).decode().splitlines()[:30]
    text[3] = "inf," + text[3].split(",", 1)[1]
    vm.write_bytes(gzip.compress(("\n".join(text) + "\n").encode()))
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest("alibaba-gpu-v2025", [jobs], trace="jobs")
        store.ingest("azure-vm-noise", [tmp_path / "azure_vm_noise"], trace="vm")
        assert rejected(store, "jobs") == [(6, "non-finite cpu_request"),
                                           (11, "non-finite gpu_request")]
        assert rejected(store, "vm") == [(4, "non-finite value")]
        assert store.trace_info("jobs")["rows"] == 37
        assert store.trace_info("vm")["rows"] == 28
