"""NTUA co-location study: the adapter on real series (counts, alignment, incomplete runs,
bad input through the CLI) and the co-location task's labels and splits."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys

import polars as pl
import pytest

from servecast.errors import DataFileError, InvalidInputError
from servecast.estimator import Estimator
from servecast.predictors.interference.colocation import colocation_task, replicas_of
from servecast.predictors.interference.colocation_gbm import CANDIDATES, with_references
from servecast.store import Store

SERIES = "vm/ntua_interference"


def _copy(data, tmp_path, *series):
    out = tmp_path / "ntua"
    for s in series:
        shutil.copytree(data / SERIES / s, out / s)
    return out


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _lines(path):
    with open(path) as fh:
        return fh.read().splitlines()


@pytest.fixture(scope="module")
def memento(tmp_path_factory, data):
    store = Store(tmp_path_factory.mktemp("ntua") / "s.duckdb")
    store.ingest("ntua-interference", [data / SERIES / "Memento_V01",
                                       data / SERIES / "Memento_V02"])
    yield store
    store.close()


@pytest.mark.slow  # ingests real series (> 5 s)
def test_real_series_accounted_for(memento, data):
    runs = memento.sql("SELECT * FROM interference_runs WHERE series = 'Memento_V01'")
    src = _rows(data / SERIES / "Memento_V01/nginx_metrics.csv")
    assert runs.height == len(src) == 135
    assert set(runs["test_id"]) == {r["Test_ID"] for r in src}
    assert (runs["samples"] == 37).all()  # 36 data lines + header in every counter file
    fam = dict(runs.group_by("family").len().iter_rows())
    assert fam == {"baseline": 27, "cpu": 36, "l3": 36, "membw": 36}
    one = src[3]
    row = runs.filter(pl.col("test_id") == one["Test_ID"]).row(0, named=True)
    assert row["avg_latency_s"] == float(one["Avg_Latency"])
    assert (row["family"], row["pods"]) == ("cpu", 1) and one["Interference_ID"] == "11"
    # the counters of one sample are the file's values, system and per-core
    sysf = _rows(data / SERIES / f"Memento_V01/pcm_system_{one['Test_ID']}.csv")
    got = dict(memento.sql(
        "SELECT metric, value FROM interference_samples WHERE series = 'Memento_V01' "
        "AND test_id = ? AND sample = 2", [one["Test_ID"]]).iter_rows())
    assert got["sys:IPC"] == float(sysf[2]["System - IPC"])
    assert got["sys:Pack C-States C6res%"] == float(sysf[2]["System Pack C-States - C6res%"])
    assert sum(k.startswith("core") for k in got) == 64
    manifest = memento.sql("SELECT sum(rows), sum(rejected) FROM traces").row(0)
    assert manifest == (270 + 2 * 270 * 37, 0)


@pytest.mark.slow  # ingests real series (> 5 s)
def test_longer_counter_file_tail_rejected_and_lone_file_kept(data, tmp_path):
    folder = data / SERIES / "TheGame_V01"
    with Store(tmp_path / "g.duckdb") as store:
        store.ingest("ntua-interference", [folder])
        runs = store.sql("SELECT test_id, samples FROM interference_runs")
        assert runs.height == len(_rows(folder / "nginx_metrics.csv"))
        # 1replicas_scenario22_1000rps: 90 system samples, 91 core samples
        tid = "1replicas_scenario22_1000rps"
        assert dict(runs.iter_rows())[tid] == 90
        rej = store.sql("SELECT file, line, reason FROM rejected_rows WHERE file LIKE ?",
                        [f"%pcm_core_{tid}.csv"])
        assert rej.rows() == [(str(folder / f"pcm_core_{tid}.csv"), 92,
                               f"no matching sample in pcm_system_{tid}.csv")]
        # 1replicas_scenario21_2500rps has no core file: its system counters alone
        tid = "1replicas_scenario21_2500rps"
        assert not (folder / f"pcm_core_{tid}.csv").exists()
        m = store.sql("SELECT DISTINCT metric FROM interference_samples WHERE test_id = ?",
                      [tid])["metric"]
        assert len(m) == 12 and all(x.startswith("sys:") for x in m)
        assert dict(runs.iter_rows())[tid] == len(_lines(folder / f"pcm_system_{tid}.csv")) - 1


def test_misaligned_samples_refused_by_the_cli(data, tmp_path):
    root = _copy(data, tmp_path, "Memento_V01")
    tid = "1replicas_scenario11_100rps"
    core = root / "Memento_V01" / f"pcm_core_{tid}.csv"
    lines = _lines(core)
    lines[5] = lines[5].replace(lines[5].split(",")[1], "23:59:59.000", 1)
    core.write_text("\n".join(lines) + "\n")
    db = tmp_path / "s.duckdb"
    r = subprocess.run([sys.executable, "-m", "servecast.cli", "ingest", "ntua-interference",
                        str(root), "--db", str(db)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "misaligned samples" in r.stderr and f"pcm_core_{tid}.csv: line 6" in r.stderr
    assert "Traceback" not in r.stderr
    with Store(db) as store:  # nothing half-written
        assert store.sql("SELECT count(*) AS n FROM interference_runs")["n"][0] == 0


def test_orphan_counter_file_and_missing_run_table(data, tmp_path):
    root = _copy(data, tmp_path, "Memento_V01")
    extra = root / "Memento_V01" / "pcm_system_9replicas_scenario0_100rps.csv"
    shutil.copy(root / "Memento_V01" / "pcm_system_1replicas_scenario0_100rps.csv", extra)
    with Store(tmp_path / "a.duckdb") as store, \
            pytest.raises(DataFileError, match="9replicas_scenario0_100rps.*not a run of"):
        store.ingest("ntua-interference", [root])
    extra.unlink()
    (root / "Memento_V01" / "nginx_metrics.csv").unlink()
    with Store(tmp_path / "b.duckdb") as store, \
            pytest.raises(DataFileError, match="no nginx_metrics.csv"):
        store.ingest("ntua-interference", [root])


@pytest.mark.slow  # a real NTUA run ingested
def test_run_without_counter_files_kept_and_left_out_of_the_task(data, tmp_path):
    root = _copy(data, tmp_path, "Memento_V01")
    tid = "1replicas_scenario12_100rps"
    for kind in ("system", "core"):
        (root / "Memento_V01" / f"pcm_{kind}_{tid}.csv").unlink()
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest("ntua-interference", [root])
        runs = store.sql("SELECT test_id, samples FROM interference_runs")
        assert dict(runs.iter_rows())[tid] == 0
        task = colocation_task(store)
        assert task.dropped == {"no counters": 1, "no baseline": 0}
        assert f"Memento_V01/{tid}" not in set(task.windows["window_id"])
        assert task.windows.height == 134


@pytest.mark.slow  # ingests real series (> 5 s)
def test_labels_follow_the_documented_definition(memento, data):
    task = colocation_task(memento, test_series=["Memento_V02"])
    src = _rows(data / SERIES / "Memento_V01/nginx_metrics.csv")
    # an L3 run at 2 replicas... of V01: baseline = median Avg_Latency of Baseline* runs at
    # the same replicas and rate in the same series
    run = next(r for r in src if r["Interference_ID"] == "24")
    base = statistics.median(float(r["Avg_Latency"]) for r in src
                             if r["Interference_ID"] in ("0", "1", "2")
                             and r["Given_RPS"] == run["Given_RPS"]
                             and r["Replicas"] == run["Replicas"])
    want = min(1.0, base / float(run["Avg_Latency"]))
    got = task.labels.filter(pl.col("window_id") == f"Memento_V01/{run['Test_ID']}")["perf"]
    assert got.to_list() == [pytest.approx(want)]
    assert task.labels["perf"].is_between(0, 1, closed="right").all()
    w = task.windows
    assert set(w.filter(pl.col("split") == "test")["vm"]) == {"Memento_V02"}
    assert set(w.filter(pl.col("split") == "train")["vm"]) == {"Memento_V01"}
    groups = task.groups("test")
    assert set(groups["group"]) == {"baseline", "cpu", "l3", "membw"}
    # windows: system counters plus the known load at every step
    one = task.metrics.filter(pl.col("window_id") == f"Memento_V01/{run['Test_ID']}")
    assert one["t"].n_unique() == 37
    assert set(one.filter(pl.col("metric") == "rps")["value"]) == {float(run["Given_RPS"])}
    assert set(one.filter(pl.col("metric") == "replicas")["value"]) == {1.0}
    assert not one["metric"].str.starts_with("core").any()
    assert replicas_of("node1_rep3replicas_scenario0_1500rps", "node1_rep3") == 3.0
    assert replicas_of("x", "balanced_1") == 1.0


@pytest.mark.slow  # ingests real series (> 5 s)
def test_series_without_baselines(data, tmp_path):
    root = _copy(data, tmp_path, "Memento_V01", "TheGame_V01")  # both 1 replica, same rates
    metrics = root / "TheGame_V01" / "nginx_metrics.csv"
    lines = _lines(metrics)
    metrics.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ",Baseline" not in ln])
                       + "\n")
    for f in (root / "TheGame_V01").glob("pcm_*_scenario[012]_*.csv"):
        f.unlink()
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest("ntua-interference", [root])
        with pytest.raises(InvalidInputError, match="TheGame_V01: no Baseline runs"):
            colocation_task(store, pooled_baselines=False)
        # pooled: Memento_V01's baselines at the same replicas and rate stand in
        task = colocation_task(store, test_series=["TheGame_V01"])
        assert task.dropped["no baseline"] == 0
        src = _rows(data / SERIES / "Memento_V01/nginx_metrics.csv")
        run = next(r for r in _rows(metrics) if r["Interference_ID"] == "33")
        base = statistics.median(float(r["Avg_Latency"]) for r in src
                                 if r["Interference_ID"] in ("0", "1", "2")
                                 and r["Given_RPS"] == run["Given_RPS"])
        got = task.labels.filter(pl.col("window_id") == f"TheGame_V01/{run['Test_ID']}")
        assert got["perf"].to_list() == [pytest.approx(min(1, base / float(run["Avg_Latency"])))]
        assert "baseline" not in set(task.windows.filter(pl.col("split") == "test")["vm_sku"])
        with pytest.raises(InvalidInputError, match="Nope not in the store"):
            colocation_task(store, test_series=["Nope"])


@pytest.mark.slow  # ingests three real series and trains GBM through the CLI (> 5 s)
def test_cli_trains_the_default_colocation_model(data, tmp_path):
    db, out = tmp_path / "s.duckdb", tmp_path / "models"
    with Store(db) as store:
        store.ingest("ntua-interference", [data / SERIES / s for s in
                                           ("Memento_V01", "Memento_V02", "Memento_V03")])
    cli = [sys.executable, "-m", "servecast.cli", "train", "interference", "--task",
           "colocation", "--fast", "--out", str(out), "--db", str(db)]
    r = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["params"]["model"] == "gbm-baseline" == card["default_model"]
    assert card["variant"] in {c.name for c in CANDIDATES}
    assert card["variant"] == min(card["selection"]["inner_mae_pp"],
                                  key=card["selection"]["inner_mae_pp"].get)
    unseen = card["selection"]["inner_unseen_mae_pp"]  # setting folds, no co-runner features
    assert card["unseen_variant"] == min((n for n in unseen if "+co" not in n), key=unseen.get)
    # the network member: scored on the same setting folds, saved only when chosen
    with_net = card["unseen_variant"].endswith("+temporal")
    assert card["unseen_network"].startswith("chosen" if with_net else "not chosen")
    assert (out / "net" / "temporal" / "net.pt").is_file() == with_net
    assert "test = Memento_V03, val = Memento_V02" in card["split"]["rule"]
    assert "colocation: gbm-baseline" in r.stdout and "test MAE" in r.stdout
    # the Estimator serves it from the run's counters + the series' baseline counters
    with Store(db, read_only=True) as store:
        t = colocation_task(store, test_series=["Memento_V03"])
    test = t.windows.filter(pl.col("split") == "test").select("window_id")
    est = Estimator.load(out)
    assert est.runtime("interference").family == "gbm-baseline"
    got = est.interference_batch(
        with_references(t).join(test, on="window_id", how="semi"))
    j = got.join(t.labels, on="window_id")
    assert j.height == test.height and got["perf"].is_between(1e-3, 1).all()
    mae = 100 * (j["perf"] - j["perf_right"]).abs().mean()
    assert mae == pytest.approx(card["test"]["all"]["mae_pp"])
    assert (got["lo"] <= got["perf"]).all() and (got["perf"] <= got["hi"]).all()
    # the previous default stays a first-class model
    r = subprocess.run([*cli, "--model", "gbm", "--out", str(tmp_path / "gbm")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "gbm/model_card.json").read_text())["params"]["model"] == "gbm"
    # a store with too few series: exit 2 and a message, no traceback
    with Store(tmp_path / "one.duckdb") as store:
        store.ingest("ntua-interference", [data / SERIES / "Memento_V01"])
    r = subprocess.run([*cli[:-1], str(tmp_path / "one.duckdb")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "needs 3" in r.stderr and "Traceback" not in r.stderr


NTUA3 = ("Memento_V01", "Memento_V02", "Fight_Club_V01")
TINY = dict(d_model=16, layers=1, lr=5e-3, batch_size=32, train_steps=20, n_seeds=1,
            gbm_trees=100, epochs=1)


@pytest.mark.slow  # ingests three real series, trains a small pretrained network
def test_benchmark_saves_each_model_as_it_finishes(data, tmp_path):
    """benchmarks/interference_ntua.py: each finished (fold, model) is in the `--save` file
    before the next model starts, so a run that crashes keeps it; `--save-models` writes
    every fitted model (temporal-pre included) where `InterferencePredictor.load` reads it
    and predicts the saved rows."""
    from interference_ntua import Saver, run

    from servecast.predictors.interference.predictor import InterferencePredictor

    store = Store(tmp_path / "s.duckdb")
    store.ingest("ntua-interference", [data / SERIES / s for s in NTUA3])
    task = colocation_task(store, test_series=["Memento_V02"])
    store.close()
    file, models = tmp_path / "pred.parquet", tmp_path / "models"
    seen = []

    def log(line):
        seen.append(pl.read_parquet(file)["model"].to_list())

    rows = run(task, "series", ["mean", "temporal-pre"], TINY, 10, log=log,
               only={"Memento_V02"}, pre_steps=10, saver=Saver(file, models))
    n = rows.filter(pl.col("model") == "mean").height
    assert n > 0 and [len(s) for s in seen] == [n, 2 * n]
    assert set(seen[0]) == {"mean"} and set(seen[1]) == {"mean", "temporal-pre"}
    assert pl.read_parquet(file).equals(rows)
    assert not list(tmp_path.glob("*.tmp"))
    pre = InterferencePredictor.load(models / "series" / "Memento_V02" / "temporal-pre")
    assert pre.model == "temporal" and pre.get_params()["pre_steps"] == 10
    test_metrics = task.part("test")[0]  # the task's own split: Memento_V02 tests
    got = rows.filter(pl.col("model") == "temporal-pre").select("window_id", "pred").join(
        pre.predict(test_metrics), on="window_id")
    assert got.height == n and (got["pred"] == got["perf"]).all()
    assert (models / "series" / "Memento_V02" / "mean" / "model_card.json").is_file()

    def crash(line):
        raise RuntimeError("killed")

    file.unlink()
    with pytest.raises(RuntimeError, match="killed"):
        run(task, "series", ["mean", "gbm"], TINY, 10, log=crash, only={"Memento_V02"},
            saver=Saver(file))
    assert pl.read_parquet(file).equals(rows.filter(pl.col("model") == "mean"))


@pytest.mark.slow  # imports the benchmark's stack in a subprocess (about 6 s here)
def test_benchmark_refuses_what_would_fail_after_training(tmp_path):
    """Arguments that would fail after an hour of training exit 2 at once, all named, before
    the store is touched."""
    db = tmp_path / "ntua.duckdb"
    bench = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "interference_ntua.py")
    out = subprocess.run([sys.executable, bench, "--db", str(db), "--models",
                          "gbm,gbm-embed,nope", "--save-models", str(tmp_path / "m"),
                          "--save", str(tmp_path / "no" / "p.parquet"), "--join",
                          str(tmp_path / "gone.parquet")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    for says in ("unknown model 'nope'", "--save-models: gbm-embed has no saved form",
                 f"no folder {tmp_path / 'no'}", f"--join {tmp_path / 'gone.parquet'}"):
        assert says in out.stderr, out.stderr
    assert not db.exists() and not (tmp_path / "m").exists()
