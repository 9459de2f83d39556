"""Host metrics and MoE routing recorded here land in the store like any trace: a second of
real host metrics (`servecast collect host-metrics`, a subprocess as a user runs it) is
ingested with `servecast ingest host-metrics` into `host_metrics` and queried back row for
row; routing counts recorded on real ShareGPT text go in through `olmoe-routing`; bad rows
are rejected with their line; a Parquet recording is refused with exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from servecast.store import Store

pytestmark = pytest.mark.slow  # four CLI subprocesses and a second of sampling


def servecast(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servecast.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


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
    out = servecast("ingest", "host-metrics", recording, "--db", db)
    assert out.returncode == 0, out.stderr
    assert f"ingested {want.height} rows into host (0 rejected)" in " ".join(out.stdout.split())
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
    out = servecast("ingest", "host-metrics", windows, "--db", db)
    assert out.returncode == 0, out.stderr
    with Store(db, read_only=True) as store:
        ids = store.query("SELECT DISTINCT window_id FROM host_metrics")["window_id"].to_list()
        rej = store.query("SELECT line, reason FROM rejected_rows ORDER BY line").rows()
    n = len(lines)
    assert ids == [7]
    assert rej == [(n + 1, "t missing, negative or not finite"), (n + 2, "missing metric")]


def test_parquet_and_foreign_csv_are_refused_with_exit_2(recording, tmp_path):
    db = tmp_path / "s.duckdb"
    parquet = tmp_path / "host.parquet"
    pl.read_csv(recording).write_parquet(parquet)
    out = servecast("ingest", "host-metrics", parquet, "--db", db)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "host.parquet" in out.stderr and "--out FILE.csv" in out.stderr
    other = tmp_path / "other.csv"
    other.write_text("time,name,v\n0,cpu,1\n")
    out = servecast("ingest", "host-metrics", other, "--db", db)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "other.csv" in out.stderr and "t, metric, value" in " ".join(out.stderr.split())
    with Store(db, read_only=True) as store:
        assert store.traces().height == 0


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
    out = servecast("ingest", "olmoe-routing", csv, "--db", db)
    assert out.returncode == 0, out.stderr
    with Store(db, read_only=True) as store:
        got = store.query("SELECT layer, sum(tokens) AS tokens, count(*) AS experts "
                          "FROM moe_expert_loads WHERE model = 'small-moe' "
                          "AND domain = 'sharegpt' GROUP BY layer ORDER BY layer")
    assert got.rows() == [(0, batch.numel() * 2, 4), (1, batch.numel() * 2, 4)]
