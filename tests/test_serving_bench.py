"""Measured serving latencies (Argonne LLM-Inference-Bench, Splitwise perf model) ->
`serving_latencies`: real files against values read with the csv module, plus bad input."""

from __future__ import annotations

import csv

import pytest

from servecast.errors import SchemaMismatchError
from servecast.store import Store


@pytest.fixture(scope="module")
def store(store_of):
    return store_of(("llm-inference-bench", "serving/llm_inference_bench", "argonne"),
                    ("splitwise-perf", "serving/splitwise", "splitwise"))


def test_argonne_rows_and_units(store, data):
    rows = list(csv.DictReader(open(data / "serving/llm_inference_bench/all_results.csv")))
    (n,) = store.con.execute("SELECT count(*) FROM serving_latencies WHERE trace = 'argonne'"
                             ).fetchone()
    assert n == len(rows)
    r = rows[7]
    got = store.con.execute(
        """SELECT latency_ms, throughput_tps FROM serving_latencies WHERE trace = 'argonne'
           AND model = ? AND device = ? AND engine = ? AND num_gpus = ? AND batch_size = ?
           AND prompt_tokens = ? AND output_tokens = ?""",
        [r["Model"], r["Hardware"], r["Framework"].lower(), int(r["Num of Hardware"]),
         int(r["Batch Size"]), int(r["Input Output Length"]), int(r["Input Output Length"])]
    ).fetchall()
    assert (pytest.approx(float(r["Latency"]) * 1000), pytest.approx(float(r["Throughput"]))) \
        in [tuple(g) for g in got]
    files = dict(store.con.execute("SELECT file, rows FROM traces WHERE trace = 'argonne'"
                                   ).fetchall())
    assert sorted(files.values()) == [0, len(rows)]  # LICENSE listed with 0 rows


def test_splitwise_prompt_and_token_times(store, data):
    rows = list(csv.DictReader(open(data / "serving/splitwise/perf_model.csv")))
    got = store.con.execute(
        "SELECT model, device, num_gpus, prompt_ms, token_ms, latency_ms FROM serving_latencies "
        "WHERE trace = 'splitwise' ORDER BY model, device, num_gpus, prompt_ms").fetchall()
    want = sorted((r["model"], r["hardware"], int(r["tensor_parallel"]), float(r["prompt_time"]),
                   float(r["token_time"]), float(r["e2e_time"])) for r in rows)
    assert [tuple(g) for g in got] == sorted(want, key=lambda w: w[:4])


def test_bad_rows_and_headers(tmp_path):
    header = "Hardware,Num of Hardware,Framework,Model,Input Output Length,Batch Size," \
             "Latency,Throughput"
    f = tmp_path / "all_results.csv"
    f.write_text(f"{header}\nA100,1,vLLM,m,128,1,2.5,50\nA100,1,vLLM,m,128,2,-1,50\n"
                 "A100,x,vLLM,m,128,4,2.5,50\n")
    with Store(tmp_path / "s.duckdb") as s:
        res = s.ingest("llm-inference-bench", [f])
        assert (res.rows, res.rejected) == (1, 2)
        lines = s.con.execute("SELECT line, reason FROM rejected_rows ORDER BY line").fetchall()
        assert [ln for ln, _ in lines] == [3, 4]
        assert "non-positive latency_s" in lines[0][1]
        bad = tmp_path / "perf_model.csv"
        bad.write_text("model,hardware,prompt_size\nllama,a100,1\n")
        with pytest.raises(SchemaMismatchError, match="perf_model.csv: line 1"):
            s.ingest("splitwise-perf", [bad])
        assert s.con.execute("SELECT count(*) FROM serving_latencies").fetchone() == (1,)
