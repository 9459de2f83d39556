"""NeuSight whole-model latencies (`gpu/neusight_e2e`) through the `neusight-e2e` adapter:
label JSONs -> serving_latencies, per-op traces -> kernel_latencies, op graphs -> op_graphs,
checked against independent reads of the raw files; bad files are refused naming them."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from servecast.store import Store


@pytest.fixture(scope="module")
def root(data):
    return data / "gpu/neusight_e2e"


@pytest.fixture(scope="module")
def store(root, tmp_path_factory):
    path = tmp_path_factory.mktemp("ne2e") / "s.duckdb"
    with Store(path) as s:
        s.ingest("neusight-e2e", [root], trace="neusight_e2e")
    return Store(path, read_only=True)


def records(path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_label_is_a_model_latency_row(store, root):
    labels = sorted((root / "label").glob("*/*.json"))
    got = {(d, r): (lat, fw, b, p) for d, r, lat, fw, b, p in store.con.execute(
        """SELECT device, extra->>'run', latency_ms, prompt_ms, batch_size, prompt_tokens
           FROM serving_latencies WHERE trace = 'neusight_e2e'""").fetchall()}
    assert len(labels) == len(got) == 90
    for f in labels:
        doc = json.loads(f.read_text())
        lat, fw, batch, seq = got[(f.parent.name, f.stem)]
        assert lat == pytest.approx(doc["e2e_latency"])
        assert fw == (pytest.approx(doc["fw_latency"]) if doc["fw_latency"] else None)
        assert f.stem.split("-")[2:4] == [str(seq), str(batch)]
    (gpus,) = store.con.execute("SELECT count(DISTINCT device) FROM serving_latencies "
                                "WHERE trace = 'neusight_e2e'").fetchone()
    assert gpus == 9
    hidden, layers, heads, par, n = store.con.execute(
        """SELECT extra->>'hidden', extra->>'layers', extra->>'heads', extra->>'parallel',
                  num_gpus FROM serving_latencies WHERE model = 'gpt2_large' AND
                  extra->>'parallel' = 'tp4'""").fetchone()
    cfg = json.loads((root / "model_configs/gpt2_large.json").read_text())
    assert (int(hidden), int(layers), int(heads)) == (cfg["n_embd"], cfg["n_layer"], cfg["n_head"])
    assert (par, n) == ("tp4", 4)


def test_op_traces_and_graphs_keep_every_record(store, root):
    traces = sorted((root / "label").glob("*/*.csv"))
    want = sum(len(records(f)) for f in traces)
    fw = sum(float(r["fw_latency"] or 0) for f in traces for r in records(f))
    n, total = store.con.execute("SELECT count(*), sum(latency_ms) FROM kernel_latencies "
                                 "WHERE trace = 'neusight_e2e'").fetchone()
    assert n == want and total == pytest.approx(fw)
    one = traces[0]
    (traced,) = store.con.execute(
        "SELECT (extra->>'traced_ops')::INT FROM serving_latencies WHERE device = ? AND "
        "extra->>'opgraph' IS NOT NULL AND model || '-' || (CASE WHEN extra->>'mode' = 'inf' "
        "THEN 'inf' ELSE 'train' END) = ? LIMIT 1",
        [one.parent.name, "-".join(one.stem.split("-")[:2])]).fetchone()
    assert traced is not None
    graphs = sorted((root / "opgraph").glob("*.csv"))
    (nodes,) = store.con.execute("SELECT count(*) FROM op_graphs WHERE trace = 'neusight_e2e'"
                                 ).fetchone()
    assert nodes == sum(len(records(f)) for f in graphs)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("gpt2_large-inf-1024-4.json", '{"num_layer": 36, "fw_latency": 1, "bwall_latency": 0}',
     "lacks e2e_latency"),
    ("gpt2_large-inf-1024-4.json", '{"num_layer": 36, "e2e_latency": -3, "fw_latency": 1, '
     '"bwall_latency": 0}', "e2e_latency=-3 must be a number >= 0"),
    ("gpt2-large.json", '{"e2e_latency": 1}', "file name not <model>-<inf|train>"),
])
def test_bad_label_is_refused_naming_the_file(tmp_path, name, text, message):
    (tmp_path / "data/label/GPU_X").mkdir(parents=True)
    bad = tmp_path / "data/label/GPU_X" / name
    bad.write_text(text)
    db = tmp_path / "s.duckdb"
    out = subprocess.run([sys.executable, "-m", "servecast.cli", "ingest", "neusight-e2e",
                          tmp_path / "data", "--db", db], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(bad) in out.stderr and message in " ".join(out.stderr.split())
    with Store(db, read_only=True) as s:  # nothing half-written
        assert s.con.execute("SELECT count(*) FROM serving_latencies").fetchone() == (0,)


def test_bad_trace_value_names_the_line(tmp_path, root):
    src = root / "label/Tesla_T4/bert_large-inf-512-8.csv"
    (tmp_path / "d/label/Tesla_T4").mkdir(parents=True)
    lines = src.read_text().splitlines()
    head = lines[0].split(",")
    row = next(csv.reader([lines[2]]))
    row[head.index("fw_latency")] = "fast"
    with (tmp_path / "d/label/Tesla_T4" / src.name).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        w.writerow(next(csv.reader([lines[1]])))
        w.writerow(row)
    shutil.copy(src.with_suffix(".json"), tmp_path / "d/label/Tesla_T4")
    out = subprocess.run([sys.executable, "-m", "servecast.cli", "ingest", "neusight-e2e",
                          tmp_path / "d", "--db", tmp_path / "s.duckdb"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "line 3: fw_latency='fast'" in out.stderr
