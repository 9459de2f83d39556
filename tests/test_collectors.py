"""Collectors (`servecast.collectors`) land in the store like any trace: a kernel profile
measured here on the CPU is ingested with `servecast ingest kernel-profile FILE` (a
subprocess, as a user runs it) and read back row for row; bad rows are rejected with their
line, a file in another format is refused with exit 2 and nothing written. The same for a
second of real host metrics (`servecast collect host-metrics`, `ingest host-metrics`, table
`host_metrics`) and for routing counts recorded on real ShareGPT text (`olmoe-routing`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from servecast.store import Store

pytestmark = pytest.mark.slow  # torch import, real CPU timing and CLI subprocesses

SHAPES = {"bmm": [{"B": 2, "M": 32, "N": 32, "K": 32}, {"B": 1, "M": 16, "N": 64, "K": 8}],
          "gelu": [{"B": 8, "H": 64}]}


def servecast(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servecast.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def ingest(adapter: str, file: Path, db: Path, rows: int | None = None) -> None:
    """`servecast ingest ADAPTER FILE --db DB`, which must succeed (storing `rows` rows, none
    rejected, under the file's stem, when given)."""
    out = servecast("ingest", adapter, file, "--db", db)
    assert out.returncode == 0, out.stderr
    if rows is not None:
        said = " ".join(out.stdout.split())
        assert f"ingested {rows} rows into {file.stem} (0 rejected)" in said, said


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> tuple[pl.DataFrame, Path]:
    from servecast.collectors.kernel_profiler import profile_kernels, write_profile

    df = profile_kernels(["bmm", "gelu"], "cpu", shapes=SHAPES, warmup=1, repeats=3)
    return df, write_profile(df, tmp_path_factory.mktemp("prof") / "mine.csv")


def test_kernel_profile_ingests_row_for_row(profile, tmp_path):
    df, csv = profile
    db = tmp_path / "s.duckdb"
    ingest("kernel-profile", csv, db, rows=df.height)
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
    ingest("kernel-profile", bad, db)
    with Store(db, read_only=True) as store:
        rej = store.query("SELECT line, reason FROM rejected_rows ORDER BY line").rows()
    n = len(lines)
    assert rej == [(n + 1, "negative latency"), (n + 2, "missing op")]


def refused(adapter: str, frame: pl.DataFrame, foreign_csv: str, tmp_path) -> str:
    """`frame` as Parquet and a CSV of another layout (`foreign_csv`, header and rows) are
    both refused by `servecast ingest ADAPTER` with exit 2, no traceback, the file named
    (and for the Parquet, the `--out FILE.csv` fix); nothing stored. Returns the CSV's
    stderr, whitespace collapsed."""
    db = tmp_path / "s.duckdb"
    parquet, other = tmp_path / "mine.parquet", tmp_path / "other.csv"
    frame.write_parquet(parquet)
    other.write_text(foreign_csv)
    errs = []
    for file in (parquet, other):
        out = servecast("ingest", adapter, file, "--db", db)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert file.name in out.stderr
        errs.append(" ".join(out.stderr.split()))
    assert "--out FILE.csv" in errs[0]
    with Store(db, read_only=True) as store:
        assert store.traces().height == 0
    return errs[1]


def test_other_formats_are_refused_with_exit_2(profile, tmp_path):
    refused("kernel-profile", profile[0], "op,latency\nbmm,1.0\n", tmp_path)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hm") / "host.csv"
    done = servecast("collect", "host-metrics", "--interval", "0.25", "--duration", "1",
                     "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def test_a_second_of_host_metrics_is_ingested_and_queried(recording, tmp_path):
    want = pl.read_csv(recording)
    assert want.height > 0 and want["metric"].n_unique() > 5
    db = tmp_path / "s.duckdb"
    ingest("host-metrics", recording, db, rows=want.height)
    with Store(db, read_only=True) as store:
        got = store.query("SELECT window_id, t, metric, value FROM host_metrics "
                          "WHERE trace = 'host' ORDER BY t, metric")
        manifest = store.traces().row(0, named=True)
        cpu = store.query("SELECT max(t) AS span, avg(value) AS cpu FROM host_metrics "
                          "WHERE metric = 'cpu_busy_pct'").row(0, named=True)
    assert manifest["table_name"] == "host_metrics" and manifest["rows"] == want.height
    assert got["window_id"].null_count() == got.height
    expect = want.sort("t", "metric")
    assert got["metric"].to_list() == expect["metric"].to_list()
    assert got["t"].to_list() == expect["t"].to_list()
    assert got["value"].to_list() == expect["value"].to_list()
    assert 0.9 <= cpu["span"] <= 5 and 0 <= cpu["cpu"] <= 100


def test_interference_windows_and_bad_rows(recording, tmp_path):
    """The `collect interference` layout (window_id first) in the same table; rows with a
    negative t or no metric are rejected with their line, the rest load."""
    lines = recording.read_text().splitlines()
    windows = tmp_path / "runs.csv"
    body = [f"7,{line}" for line in lines[1:]]
    bad = ["7,-1.0,cpu_busy_pct,3.0", "8,2.0,,1.0"]
    windows.write_text("\n".join(["window_id," + lines[0], *body, *bad]) + "\n")
    db = tmp_path / "s.duckdb"
    ingest("host-metrics", windows, db)
    with Store(db, read_only=True) as store:
        ids = store.query("SELECT DISTINCT window_id FROM host_metrics")["window_id"].to_list()
        rej = store.query("SELECT line, reason FROM rejected_rows ORDER BY line").rows()
    n = len(lines)
    assert ids == [7]
    assert rej == [(n + 1, "t missing, negative or not finite"), (n + 2, "missing metric")]


def test_parquet_and_foreign_csv_are_refused_with_exit_2(recording, tmp_path):
    err = refused("host-metrics", pl.read_csv(recording), "time,name,v\n0,cpu,1\n", tmp_path)
    assert "t, metric, value" in err


def test_routing_counts_of_real_text_are_ingested(tmp_path):
    import torch

    from servecast.collectors.moe_routing import RoutingRecorder
    from servecast.predictors.moe_congestion.model import SmallMoELM
    from servecast.predictors.moe_congestion.run import prepare_corpus

    vocab, windows, _, _ = prepare_corpus(None, 20, 5, 256, 16)
    torch.manual_seed(0)
    model = SmallMoELM(vocab=vocab.size, d=16, heads=2, layers=2, d_ff=32, n_experts=4,
                       top_k=2, context=16).eval()
    batch = torch.from_numpy(windows[:6, :-1])
    with RoutingRecorder(model) as rec, torch.no_grad():
        model(batch)
    csv = rec.write_loads(tmp_path / "routing.csv", model="small-moe", domain="sharegpt")
    db = tmp_path / "s.duckdb"
    ingest("olmoe-routing", csv, db)
    with Store(db, read_only=True) as store:
        got = store.query("SELECT layer, sum(tokens) AS tokens, count(*) AS experts "
                          "FROM moe_expert_loads WHERE model = 'small-moe' "
                          "AND domain = 'sharegpt' GROUP BY layer ORDER BY layer")
    assert got.rows() == [(0, batch.numel() * 2, 4), (1, batch.numel() * 2, 4)]
