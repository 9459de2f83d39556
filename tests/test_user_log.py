"""`user-log`: a user's own gateway logs (tests/data/gateway, written by its make.py) ingest
with one mapping each, as CSV, JSONL and Parquet, through the CLI and the Store; timestamps
in every unit; bad input is a clear error or a rejected row naming line and field."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from servecast.datasets.user_log import Mapping, UserLog
from servecast.errors import DataFileError, ServecastError
from servecast.store import Store
from tests.test_cli_store import servecast, user_error

DATA = Path(__file__).parent / "data" / "gateway"
JSONL, CSV, TOML = DATA / "gateway.jsonl", DATA / "gateway.csv", DATA / "gateway.toml"
CSV_MAP = ["--map", "timestamp=timestamp", "--map", "model=model", "--map",
           "prompt_tokens=prompt_tokens", "--map", "output_tokens=completion_tokens",
           "--map", "ttft=ttft_s", "--map", "e2e=e2e_latency_s", "--map", "status=status",
           "--map", "error=error"]


def jsonl_rows() -> list[dict]:
    return [json.loads(line) for line in JSONL.read_text().splitlines()]


def csv_rows(path: Path = CSV) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def stored(db: Path, trace: str) -> list[dict]:
    with Store(db, read_only=True) as store:
        return store.sql("SELECT * FROM llm_requests WHERE trace = ? ORDER BY request_id",
                         [trace]).to_dicts()


def rejected(db: Path) -> list[tuple]:
    with Store(db, read_only=True) as store:
        return store.con.execute(
            "SELECT line, reason, content FROM rejected_rows ORDER BY line").fetchall()


def seconds(iso: list[str]) -> list[float]:
    t = [datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp() for x in iso]
    return [x - t[0] for x in t]


def check_gateway_jsonl(rows: list[dict]) -> None:
    """Every stored value equals the one in gateway.jsonl (converted to seconds)."""
    src = jsonl_rows()
    assert len(rows) == len(src) == 60
    arrivals = seconds([r["time"] for r in src])
    for got, want, t in zip(rows, src, arrivals, strict=True):
        t_ms = want["timings"]
        assert got["arrival_s"] == pytest.approx(t, abs=1e-6)
        assert got["prompt_tokens"] == want["usage"]["prompt_tokens"]
        assert got["output_tokens"] == want["usage"]["completion_tokens"]
        assert got["model"] == want["model"] and got["session_id"] == want["session"]
        assert got["elapsed_s"] == pytest.approx(t_ms["latency_ms"] / 1000)
        assert got["queue_s"] == pytest.approx(t_ms["queue_ms"] / 1000)
        assert got["ttft_s"] == (None if t_ms["ttft_ms"] is None
                                 else pytest.approx(t_ms["ttft_ms"] / 1000))
        assert got["status"] == str(want["status"]) and got["error"] == want["error"]
        assert got["failed"] == (want["status"] != 200)
    assert sum(r["failed"] for r in rows) == 5  # the 429s and the 500s of the fixture


def test_gateway_jsonl_with_a_mapping_file(tmp_path):
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "user-log", JSONL, "--mapping", TOML, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 60 rows into gateway (0 rejected)" in proc.stdout
    check_gateway_jsonl(stored(db, "gateway"))


def test_gateway_csv_with_command_line_mapping(tmp_path):
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "user-log", CSV, *CSV_MAP, "--trace", "gw", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 50 rows into gw (0 rejected)" in proc.stdout
    rows, src = stored(db, "gw"), csv_rows()
    for got, want, t in zip(rows, src, seconds([r["timestamp"] for r in src]), strict=True):
        assert got["arrival_s"] == pytest.approx(t, abs=1e-6)
        assert got["prompt_tokens"] == int(want["prompt_tokens"])
        assert got["output_tokens"] == int(want["completion_tokens"])
        assert got["ttft_s"] == (float(want["ttft_s"]) if want["ttft_s"] else None)
        assert got["elapsed_s"] == float(want["e2e_latency_s"])
        assert got["failed"] == (want["status"] != "200")
        assert got["error"] == (want["error"] or None)


def test_parquet_with_structs_reads_like_the_jsonl(tmp_path):
    pq = tmp_path / "gateway.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_json('{JSONL}')) TO '{pq}' (FORMAT parquet)")
    assert "STRUCT" in dict(con.execute(
        f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{pq}')").fetchall()
    )["usage"]
    con.close()
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest(UserLog(Mapping.parse(file=TOML)), pq)
        assert (result.rows, result.rejected) == (60, 0)
    check_gateway_jsonl(stored(tmp_path / "s.duckdb", "gateway"))


def _with_times(tmp_path, values: list[str], name: str = "t.csv") -> Path:
    """gateway.csv with its timestamp column replaced by `values`."""
    rows = csv_rows()
    out = tmp_path / name
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r, v in zip(rows, values, strict=True):
            w.writerow({**r, "timestamp": v})
    return out


def _epoch(unit: float) -> list[str]:
    return [str(round(datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))
                      .timestamp() * unit)) for r in csv_rows()]


@pytest.mark.parametrize("unit,scale", [("epoch-s", 1), ("epoch-ms", 1e3),
                                        ("epoch-us", 1e6), ("epoch-ns", 1e9)])
def test_epoch_units_are_detected_and_declared(tmp_path, unit, scale):
    f = _with_times(tmp_path, _epoch(scale))
    want = [round(float(v) / scale - float(_epoch(scale)[0]) / scale, 6) for v in _epoch(scale)]
    for declared in ([], [f"arrival_s={unit}"]):
        db = tmp_path / f"{unit}{len(declared)}.duckdb"
        with Store(db) as store:
            mapping = Mapping.parse(CSV_MAP[1::2], units=declared)
            assert store.ingest(UserLog(mapping), f).rejected == 0
        got = [r["arrival_s"] for r in stored(db, "t")]
        # epoch seconds as DOUBLE: about 0.25 us resolution, so ns inputs keep microseconds
        assert got == pytest.approx(want, abs=max(1.01 / scale, 1e-6))


def test_relative_seconds_must_be_declared(tmp_path):
    f = _with_times(tmp_path, [f"{t:.3f}" for t in seconds([r["timestamp"]
                                                           for r in csv_rows()])])
    with Store(tmp_path / "s.duckdb") as store:
        with pytest.raises(DataFileError, match="--unit arrival_s=s"):
            store.ingest(UserLog(Mapping.parse(CSV_MAP[1::2])), f)
        assert store.traces().is_empty()
        result = store.ingest(UserLog(Mapping.parse(CSV_MAP[1::2], units=["arrival_s=s"])), f)
        assert result.rows == 50
        ms = store.sql("SELECT max(arrival_s) FROM llm_requests").item()
    assert ms == pytest.approx(seconds([r["timestamp"] for r in csv_rows()])[-1], abs=1e-3)


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.slow  # CLI subprocesses
def test_mapping_a_missing_column_names_the_columns_there(tmp_path):
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "user-log", CSV, *CSV_MAP, "--map", "ttft=ttft_ms",
                     "--db", db)
    user_error(proc, "ttft_s='ttft_ms'", "the file has: timestamp, request_id, model, status",
               "completion_tokens, ttft_s, e2e_latency_s, error")
    proc = servecast("ingest", "user-log", JSONL, "--mapping", TOML, "--map",
                     "prompt_tokens=usage.input_tokens", "--db", db)
    user_error(proc, "prompt_tokens='usage.input_tokens'", "usage.prompt_tokens",
               "timings.ttft_ms")
    assert not db.exists() or stored(db, "gateway") == []


@pytest.mark.slow  # CLI subprocesses
def test_mapping_errors_exit_2(tmp_path):
    db = tmp_path / "s.duckdb"
    user_error(servecast("ingest", "user-log", CSV, "--map", "prompt_tokens=prompt_tokens",
                         "--db", db), "no output_tokens")
    user_error(servecast("ingest", "user-log", CSV, *CSV_MAP, "--map", "tokens=x", "--db", db),
               "unknown field 'tokens'", "prompt_tokens")
    user_error(servecast("ingest", "user-log", CSV, *CSV_MAP, "--unit", "arrival_s=weeks",
                         "--db", db), "unknown timestamp unit 'weeks'", "epoch-ms")
    user_error(servecast("ingest", "burstgpt", CSV, "--map", "a=b", "--db", db),
               "are for `user-log`")
    bad = tmp_path / "m.toml"
    bad.write_text("[map\nprompt_tokens = 1")
    user_error(servecast("ingest", "user-log", CSV, "--mapping", bad, "--db", db),
               str(bad), "not valid TOML")


def test_unparseable_and_mixed_timestamps_are_rejected_rows(tmp_path):
    ms = _epoch(1e3)
    ms[4] = "yesterday"
    ms[9] = str(int(ms[9]) // 1000)  # epoch seconds among epoch ms
    ms[12] = "2025-03-04T08:15:09Z"  # ISO among numbers
    f = _with_times(tmp_path, ms)
    db = tmp_path / "s.duckdb"
    proc = servecast("ingest", "user-log", f, *CSV_MAP, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 47 rows into t (3 rejected" in proc.stdout
    rej = rejected(db)
    assert [line for line, _, _ in rej] == [6, 11, 14]  # header is line 1
    assert "arrival_s (timestamp) is not a number" in rej[0][1] and "yesterday" in rej[0][2]
    assert "out of range for epoch-ms" in rej[1][1]
    assert "is not a number" in rej[2][1]


@pytest.mark.slow  # CLI subprocesses
def test_latency_in_the_wrong_unit(tmp_path):
    db = tmp_path / "s.duckdb"
    # milliseconds declared as seconds: refused whole, nothing ingested
    proc = servecast("ingest", "user-log", JSONL, "--mapping", TOML, "--unit", "latency=s",
                     "--db", db)
    user_error(proc, "elapsed_s", "timings.latency_ms", "is the column in ms", "nothing was")
    with Store(db, read_only=True) as store:
        assert store.traces().is_empty()
        assert store.sql("SELECT count(*) FROM rejected_rows").item() == 0
    # single rows: negative, absurd, TTFT above the end-to-end latency, not a number
    rows = csv_rows()
    rows[3]["ttft_s"] = "-0.2"
    rows[5]["e2e_latency_s"] = "250000"
    rows[8]["ttft_s"] = str(float(rows[8]["e2e_latency_s"]) + 1)
    rows[10]["completion_tokens"] = "n/a"
    f = tmp_path / "lat.csv"
    with open(f, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = servecast("ingest", "user-log", f, *CSV_MAP, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 46 rows into lat (4 rejected" in proc.stdout  # every row accounted for
    reasons = {line: why for line, why, _ in rejected(db)}
    assert reasons == {
        5: "negative TTFT",
        7: "end-to-end latency above 86400 s (a value in ms declared as s?)",
        10: "TTFT longer than the end-to-end latency",
        12: "output_tokens (completion_tokens) is not a number; missing output token count",
    }


def test_a_mapping_is_needed():
    with pytest.raises(ServecastError, match="needs a column mapping"):
        UserLog().load(None, [CSV])


def test_parquet_rejected_rows_are_named_by_row_number(tmp_path):
    pq = tmp_path / "g.parquet"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * REPLACE (CASE WHEN id LIKE '%e' THEN 'soon'
                                           ELSE time::VARCHAR END AS time)
                          FROM read_json('{JSONL}')) TO '{pq}' (FORMAT parquet)""")
    con.close()
    bad = [i + 1 for i, r in enumerate(jsonl_rows()) if r["id"].endswith("e")]
    assert bad
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest(UserLog(Mapping.parse(file=TOML)), pq)
        assert (result.rows, result.rejected) == (60 - len(bad), len(bad))
        rej = store.con.execute("SELECT line, reason FROM rejected_rows ORDER BY line").fetchall()
    assert [line for line, _ in rej] == bad
    assert {why for _, why in rej} == {"arrival_s (time) is not an ISO-8601 date-time "
                                       "(mixed formats?)"}
