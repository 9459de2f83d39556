"""Collectors (`servecast.collectors`) land in the store like any trace: a kernel profile
measured here on the CPU is ingested with `servecast ingest kernel-profile FILE` (a
subprocess, as a user runs it) and read back row for row; bad rows are rejected with their
line, a file in another format is refused with exit 2 and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from servecast.store import Store

pytestmark = pytest.mark.slow  # torch import, real CPU timing and three CLI subprocesses

SHAPES = {"bmm": [{"B": 2, "M": 32, "N": 32, "K": 32}, {"B": 1, "M": 16, "N": 64, "K": 8}],
          "gelu": [{"B": 8, "H": 64}]}


def servecast(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servecast.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> tuple[pl.DataFrame, Path]:
    from servecast.collectors.kernel_profiler import profile_kernels, write_profile

    df = profile_kernels(["bmm", "gelu"], "cpu", shapes=SHAPES, warmup=1, repeats=3)
    return df, write_profile(df, tmp_path_factory.mktemp("prof") / "mine.csv")


def test_kernel_profile_ingests_row_for_row(profile, tmp_path):
    df, csv = profile
    db = tmp_path / "s.duckdb"
    out = servecast("ingest", "kernel-profile", csv, "--db", db)
    assert out.returncode == 0, out.stderr
    assert f"ingested {df.height} rows into mine (0 rejected)" in " ".join(out.stdout.split())
    with Store(db, read_only=True) as store:
        got = store.query("SELECT * EXCLUDE (trace) FROM kernel_latencies WHERE trace = 'mine' "
                          "ORDER BY op, B, M")
    want = df.drop("trace").sort(["op", "B", "M"], nulls_last=False)
    assert got.height == df.height
    for col in ("source", "device", "op", "B", "M", "N", "K", "H", "latency_ms",
                "latency_std_ms"):
        assert got[col].to_list() == want[col].to_list(), col


def test_bad_profile_rows_are_rejected_with_their_line(profile, tmp_path):
    _, csv = profile
    lines = csv.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    row, cols = lines[1].split(","), lines[0].split(",")
    row_neg = list(row)
    row_neg[cols.index("latency_ms")] = "-1.0"
    row_noop = list(row)
    row_noop[cols.index("op")] = ""
    bad.write_text("\n".join([*lines, ",".join(row_neg), ",".join(row_noop)]) + "\n")
    db = tmp_path / "s.duckdb"
    out = servecast("ingest", "kernel-profile", bad, "--db", db)
    assert out.returncode == 0, out.stderr
    with Store(db, read_only=True) as store:
        rej = store.query("SELECT line, reason FROM rejected_rows ORDER BY line").rows()
    n = len(lines)
    assert rej == [(n + 1, "negative latency"), (n + 2, "missing op")]


def test_other_formats_are_refused_with_exit_2(profile, tmp_path):
    df, _ = profile
    db = tmp_path / "s.duckdb"
    parquet = tmp_path / "mine.parquet"
    df.write_parquet(parquet)
    out = servecast("ingest", "kernel-profile", parquet, "--db", db)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "mine.parquet" in out.stderr and "--out FILE.csv" in out.stderr
    other = tmp_path / "other.csv"
    other.write_text("op,latency\nbmm,1.0\n")
    out = servecast("ingest", "kernel-profile", other, "--db", db)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "other.csv" in out.stderr
    with Store(db, read_only=True) as store:
        assert store.traces().height == 0
