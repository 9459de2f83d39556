"""Standing robustness suite of the ingest: property-based files built from real BurstGPT and
Mooncake rows plus hostile ones (long lines, mixed line endings, BOMs, quoted line breaks,
huge, fractional and non-finite numbers, duplicate headers, short rows, blank lines). Every
ingest either accounts for each record (accepted + rejected = records written, one rejected
row per line) or is refused with a ServecastError and leaves the store exactly as it was.
A `kill -9` mid-ingest leaves a store that opens, unchanged or with the whole file.

Bounded: hypothesis runs 40 + 25 derandomized examples (deadline None); the file takes
about 20-25 s on 2 shared cores (the two property tests, 7-8 s each, are marked slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from servecast.datasets.catalog import shared_path
from servecast.datasets.scan import MAX_LINE_BYTES
from servecast.errors import ServecastError
from servecast.schema import TABLES
from servecast.store import Store

BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
SETTINGS = settings(deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def real_lines(rel: str, data: Path, skip: int) -> list[str]:
    with open(shared_path(rel, data), encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh][skip:]


@pytest.fixture(scope="module")
def burst_rows(data) -> list[str]:
    return real_lines("llm/burstgpt/BurstGPT_head54.csv", data, skip=1)


@pytest.fixture(scope="module")
def mooncake_rows(data) -> list[str]:
    return real_lines("llm/mooncake/conversation_trace.jsonl", data, skip=0)[:200]


def table_counts(store: Store) -> dict[str, int]:
    return {t: store.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def numbered(records: list[tuple[str, bool]], first: int) -> tuple[int, dict[int, str]]:
    """(records to account for, {reader line: text}) of records written from line `first`;
    a blank line takes a line number but holds no record."""
    return (sum(n for _, n in records),
            {first + i: text for i, (text, n) in enumerate(records) if n})


def check_accounted(store: Store, path: Path, trace: str, records: int, source: str,
                    strict: bool = False, texts: dict[int, str] | None = None) -> str:
    """Ingest `path`; assert every record is accounted for, or the refusal changed nothing;
    each rejected row names the line of a record and holds its text (`texts`: line -> text).
    Returns 'loaded' or 'refused'."""
    before = table_counts(store)
    try:
        store.ingest(source, [path], trace=trace, strict=strict)
    except ServecastError as e:
        assert str(path) in str(e) or str(store.path) in str(e), e
        assert table_counts(store) == before
        return "refused"
    rows, rejected = store.con.execute(
        "SELECT rows, rejected FROM traces WHERE trace = ?", [trace]).fetchone()
    assert rows + rejected == records
    stored = store.con.execute(
        "SELECT count(*) FROM llm_requests WHERE trace = ?", [trace]).fetchone()[0]
    lines = store.con.execute(
        "SELECT count(*), count(DISTINCT line) FROM rejected_rows WHERE trace = ?",
        [trace]).fetchone()
    assert stored == rows
    assert lines == (rejected, rejected), "one rejected row per source line"
    assert rows > 0 or rejected == 0, "a file with every row rejected is refused, not stored"
    for line, content in store.con.execute(
            "SELECT line, content FROM rejected_rows WHERE trace = ?", [trace]).fetchall():
        if texts is not None:
            assert line in texts, (line, content[:80])
            assert content[:100] == texts[line][:100], (line, content[:100], texts[line][:100])
    return "loaded"


# -- CSV ------------------------------------------------------------------------------------
HOSTILE_CSV = [
    "3000000000",  # above INTEGER
    "1e300", "-1", "2.5", "nan", "inf", "-inf", "", "twelve", "99999999999999999999999",
]


@st.composite
def csv_record(draw, real: list[str]) -> tuple[str, bool]:
    """(record text, counts as a record) drawn from real rows and hostile variants."""
    base = draw(st.sampled_from(real)).split(",")
    kind = draw(st.sampled_from(
        ["real", "real", "real", "value", "value", "quoted_break", "short", "header",
         "blank", "long", "unicode"]))
    if kind == "value":
        col = draw(st.sampled_from([0, 2, 3, 4]))
        base[col] = draw(st.sampled_from(HOSTILE_CSV))
    elif kind == "quoted_break":
        base[1] = '"GPT\n4, ""turbo"""'
    elif kind == "short":
        base = base[: draw(st.integers(1, 5))]
    elif kind == "header":
        return BURST_HEADER, True
    elif kind == "blank":
        return "", False
    elif kind == "long":
        base[1] = "x" * draw(st.sampled_from([MAX_LINE_BYTES + 1, 3 * MAX_LINE_BYTES]))
    elif kind == "unicode":
        base[1] = draw(st.text(st.characters(blacklist_characters=',"\r\n',
                                             blacklist_categories=["Cs"]), max_size=20))
    return ",".join(base), True


@pytest.mark.slow
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_csv_every_record_accounted_for(burst_rows, data):
    records = data.draw(st.lists(csv_record(burst_rows), min_size=1, max_size=40))
    newline = data.draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    bom = data.draw(st.booleans())
    final_newline = data.draw(st.booleans())
    strict = data.draw(st.booleans())
    ends = [data.draw(st.sampled_from(["\n", "\r\n"])) if newline == "mixed" else newline
            for _ in range(len(records) + 1)]
    text = ("\ufeff" if bom else "") + BURST_HEADER + ends[0]
    text += "".join(r + e for (r, _), e in zip(records, ends[1:], strict=True))
    if not final_newline:
        text = text.rstrip("\r\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "burst.csv"
        path.write_bytes(text.encode("utf-8"))
        with Store(Path(tmp) / "s.duckdb") as store:
            n, texts = numbered(records, first=2)
            event(check_accounted(store, path, "t", n, "burstgpt", strict, texts))


def test_ten_long_lines_are_rejected_and_the_good_rows_load(tmp_path, burst_rows):
    """Issue 21 case 1: DuckDB's reader lost 4 of these 12 records (exit 0)."""
    long = [f"{'x' * 1_000_000},ChatGPT,10,5,15,Conversation log" for _ in range(10)]
    path = tmp_path / "long.csv"
    path.write_text("\n".join([BURST_HEADER, *long, *burst_rows[:2]]) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        assert check_accounted(store, path, "long", 12, "burstgpt") == "loaded"
        got = store.con.execute(
            "SELECT line, reason, left(content, 12) FROM rejected_rows ORDER BY line").fetchall()
        assert [g[0] for g in got] == list(range(2, 12))
        assert all("over the 256 KiB limit" in g[1] for g in got)
        assert got[0][2] == "xxxxxxxxxxxx"
        assert store.trace_info("long")["rows"] == 2


def test_token_count_above_int32_is_a_rejected_row(tmp_path, burst_rows):
    """Issue 21 case 3: this aborted the ingest with a DuckDB ConversionException."""
    path = tmp_path / "big.csv"
    path.write_text("\n".join([BURST_HEADER, "1,ChatGPT,3000000000,5,3000000005,Conversation log",
                               *burst_rows[:3]]) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        assert check_accounted(store, path, "big", 4, "burstgpt") == "loaded"
        assert store.con.execute("SELECT line, reason, content FROM rejected_rows").fetchall() == [
            (2, "prompt token count above 2,147,483,647",
             "1,ChatGPT,3000000000,5,3000000005,Conversation log")]


# -- JSONL ----------------------------------------------------------------------------------
@st.composite
def jsonl_record(draw, real: list[str]) -> tuple[str, bool]:
    obj = json.loads(draw(st.sampled_from(real)))
    kind = draw(st.sampled_from(["real", "real", "value", "broken", "blank", "long"]))
    if kind == "value":
        key = draw(st.sampled_from(["timestamp", "input_length", "output_length"]))
        obj[key] = draw(st.sampled_from(
            [3_000_000_000, 1e300, -5, 2.5, float("nan"), float("inf"), None, "7", 10**30]))
    elif kind == "broken":
        return json.dumps(obj)[: draw(st.integers(1, 20))], True
    elif kind == "blank":
        return "", False
    elif kind == "long":
        obj["hash_ids"] = list(range(MAX_LINE_BYTES // 6))
    return json.dumps(obj), True  # NaN / Infinity are not JSON: rejected lines


@pytest.mark.slow
@settings(SETTINGS, max_examples=25)
@given(data=st.data())
def test_jsonl_every_record_accounted_for(mooncake_rows, data):
    records = data.draw(st.lists(jsonl_record(mooncake_rows), min_size=1, max_size=30))
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    text = "".join(r + newline for r, _ in records)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        path.write_bytes(text.encode("utf-8"))
        with Store(Path(tmp) / "s.duckdb") as store:
            n, texts = numbered(records, first=1)
            event(check_accounted(store, path, "t", n, "mooncake", texts=texts))


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_long_first_line_keeps_the_line_numbers_after_it(tmp_path, mooncake_rows, newline):
    """A blanked over-long line keeps its own line break: with CRLF lines a lone LF in the
    reader's copy shifted every later line, and the bad line's rejected row lost its line
    (found by the JSONL property above)."""
    obj = json.loads(mooncake_rows[0])
    records = [(json.dumps(dict(obj, hash_ids=list(range(MAX_LINE_BYTES // 6)))), True),
               (mooncake_rows[1], True), ("{", True)]
    path = tmp_path / "trace.jsonl"
    path.write_bytes("".join(r + newline for r, _ in records).encode())
    with Store(tmp_path / "s.duckdb") as store:
        n, texts = numbered(records, first=1)
        assert check_accounted(store, path, "t", n, "mooncake", texts=texts) == "loaded"
        assert store.con.execute(
            "SELECT list(line ORDER BY line) FROM rejected_rows").fetchone()[0] == [1, 3]


# -- kill -9 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_kill_9_mid_ingest_leaves_the_store_whole(tmp_path, burst_rows, delay):
    """SIGKILL a `servecast ingest` of 600,000 rows `delay` s after it starts writing the
    store: the store opens and holds either nothing of the file or all of it (the seed trace
    intact either way)."""
    db = tmp_path / "s.duckdb"
    seed = tmp_path / "seed.csv"
    seed.write_text("\n".join([BURST_HEADER, *burst_rows]) + "\n")
    with Store(db) as store:
        store.ingest("burstgpt", [seed])
    big = tmp_path / "big.csv"
    rows = [r.split(",", 1)[1] for r in burst_rows]
    with open(big, "w") as fh:
        fh.write(BURST_HEADER + "\n")
        for i in range(600_000):
            fh.write(f"{i},{rows[i % len(rows)]}\n")
    proc = subprocess.Popen([sys.executable, "-m", "servecast.cli", "ingest", "burstgpt",
                             str(big), "--db", str(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wal = db.with_name(db.name + ".wal")
    size = db.stat().st_size
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # until it writes the store
        if wal.exists() or db.stat().st_size != size:
            break
        time.sleep(0.01)
    time.sleep(delay)
    assert proc.poll() is None, "the ingest ended before the kill: use a bigger file"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(db, read_only=True) as store:
        traces = dict(store.con.execute("SELECT trace, rows FROM traces").fetchall())
        stored = store.con.execute(
            "SELECT count(*) FROM llm_requests WHERE trace = 'big'").fetchone()[0]
        assert traces["seed"] == len(burst_rows)
        assert traces.get("big", 0) in (0, 600_000)
        assert stored == traces.get("big", 0)
