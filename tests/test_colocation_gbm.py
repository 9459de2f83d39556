"""Run-level GBM and nested selection on real NTUA series (Memento_V01/V02, Fight_Club_V01):
features against the counters they summarise, no leakage from the outer test split into
selection, and the conformal half-width."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from servecast.errors import InvalidInputError, ModelVersionError
from servecast.predictors.interference import colocation_gbm as cg
from servecast.predictors.interference.colocation import colocation_task
from servecast.predictors.interference.colocation_runtime import (
    ColocationRuntime,
    feature_names,
    window_features,
)
from servecast.predictors.interference.tasks import Task
from servecast.store import Store

SERIES = ("Memento_V01", "Memento_V02", "Fight_Club_V01")
TEST = "Memento_V02"


@pytest.fixture(scope="module")
def task(tmp_path_factory, data):
    store = Store(tmp_path_factory.mktemp("ntua_gbm") / "s.duckdb")
    store.ingest("ntua-interference", [data / "vm/ntua_interference" / s for s in SERIES])
    yield colocation_task(store, test_series=[TEST])
    store.close()


@pytest.fixture(scope="module")
def feats(task):
    return cg.run_features(task)


@pytest.mark.slow  # ingests three real series
def test_features_summarise_the_counters(task, feats):
    assert feats.height == task.windows.height
    run = task.windows.filter(pl.col("family") == "membw").row(0, named=True)
    vals = (task.metrics.filter(pl.col("window_id") == run["window_id"],
                                pl.col("metric") == "sys:READ").sort("t")["value"].to_numpy())
    row = feats.filter(pl.col("window_id") == run["window_id"]).row(0, named=True)
    assert row["stats:mean_sys:READ"] == pytest.approx(vals.mean())
    assert row["stats:last_sys:READ"] == pytest.approx(vals[-1])
    assert row["rate:sys:READ"] == pytest.approx(vals.mean() / run["rps"])
    # the reference: mean READ of the same series' baseline runs at the same load
    base = task.windows.filter(pl.col("family") == "baseline", pl.col("vm") == run["vm"],
                               pl.col("replicas") == run["replicas"],
                               pl.col("rps") == run["rps"])["window_id"]
    ref = (task.metrics.filter(pl.col("window_id").is_in(base.implode()),
                               pl.col("metric") == "sys:READ")
           .group_by("window_id").agg(pl.col("value").mean())["value"].mean())
    assert row["base:ratio_sys:READ"] == pytest.approx(vals.mean() / ref)
    assert not any(c.startswith("base:") for c in cg.columns_of(feats, "stats"))
    assert "stats:rps" in cg.columns_of(feats, "stats+base+rate")


@pytest.mark.slow
def test_nested_selection_never_sees_the_test_split(task, monkeypatch):
    """Both regimes' variants, the network member of the unseen-settings regime and the
    intervals come from the training series only; the test runs are predicted once."""
    calls = []
    perf = ColocationRuntime._perf
    monkeypatch.setattr(ColocationRuntime, "_perf",
                        lambda self, cols: calls.append(1) or perf(self, cols))
    pred, info = cg.nested_predictions(task, k=2, seeds=1, rounds=60, net_train_steps=20)
    assert len(calls) == 1  # predictions and half-widths from one pass
    names = {c.name for c in cg.CANDIDATES}
    assert set(info["inner"]) == {"series", "settings"}
    series, settings = info["inner"]["series"], info["inner"]["settings"]
    assert set(series) == names
    free = [c.name for c in cg.CANDIDATES if "co" not in c.features.split("+")]
    gbm = min(free, key=settings.get)
    assert set(settings) == names | {f"{gbm}+temporal"}  # the mean, on the same folds
    assert info["chosen"] == min(series, key=series.get)
    with_net = settings[f"{gbm}+temporal"] < settings[gbm]
    assert info["unseen"] == (f"{gbm}+temporal" if with_net else gbm)
    assert pred.height == task.windows.filter(pl.col("vm") == TEST).height
    assert pred["pred"].is_between(0, 1).all() and (pred["half"] > 0).all()
    # scrambled labels of the test series change nothing in selection or the interval
    scrambled = task.labels.with_columns(
        perf=pl.when(task.windows["vm"] == TEST).then(1.0 - pl.col("perf"))
        .otherwise(pl.col("perf")))
    t2 = Task(task.name, task.metrics, scrambled, task.windows, task.target_metric)
    pred2, info2 = cg.nested_predictions(t2, k=2, seeds=1, rounds=60, net_train_steps=20)
    assert info2 == info
    assert np.allclose(pred2["pred"], pred["pred"]) and pred2["half"].equals(pred["half"])


@pytest.mark.slow
def test_corunner_pods_are_features_and_perf_is_monotone_in_them(task, feats):
    """co:<family> = pods of that co-runner family (the Interference_Name's count), 0 for
    the others and for baseline runs; the monotone candidate never predicts a faster
    service with more co-runner pods."""
    w = task.windows.join(task.labels, on="window_id").join(feats, on="window_id")
    pods = w["interference"].str.extract(r"^(\d+)_").cast(pl.Float64).fill_null(0.0)
    for fam in ("cpu", "l3", "membw"):
        want = pl.when(w["family"] == fam).then(pods).otherwise(0.0)
        assert w.select(want.alias("want"))["want"].to_list() == w[f"co:{fam}"].to_list()
    assert (w.filter(pl.col("family") == "cpu")["co:cpu"] > 0).all()
    assert set(cg.columns_of(feats, "stats+base+co")) - set(cg.columns_of(feats, "stats+base")) \
        == {"co:cpu", "co:l3", "co:membw"}
    cols = cg.columns_of(feats, "stats+base+co")
    train = w.filter(pl.col("split") != "test")
    cand = cg.Candidate("stats+base+co", rounds=60, monotone=True)
    (b,) = cg.fit_boosters(train.select(cols).to_numpy(), train["perf"].to_numpy(), cand, cols)
    x = np.repeat(w.filter(pl.col("family") == "l3").select(cols).to_numpy()[:20], 5, axis=0)
    x[:, cols.index("co:l3")] = np.tile(np.arange(5.0), 20)
    perf = cg.from_target(b.predict(x), "log").reshape(20, 5)
    assert (np.diff(perf, axis=1) <= 1e-12).all()


def test_series_folds_and_targets():
    s = np.array(["a", "b", "c", "a", "d", "b"])
    folds = cg.series_folds(s, 3)
    assert np.all(sum(f.astype(int) for f in folds) == 1)  # every run held out once
    for f in folds:
        assert not set(s[f]) & set(s[~f])  # no series on both sides
    with pytest.raises(InvalidInputError, match=">= 2 training series"):
        cg.series_folds(np.array(["a", "a"]), 3)
    fam = np.array(["baseline", "cpu", "cpu", "l3", "l3", "membw", "cpu", "cpu"])
    inter = np.array(["Baseline0", "1_iBench_CPU_pod", "2_iBench_CPU_pods",
                      "1_stress-ng_l3_pod", "3_stress-ng_l3_pods", "2_iBench_memBW_pods",
                      "3_iBench_CPU_pods", "4_iBench_CPU_pods"])
    sf = cg.setting_folds(fam, inter)
    assert len(sf) == 4 and not any(f[0] for f in sf)  # cpu has 4 pod counts; baselines train
    held = sum(f.astype(int) for f in sf)
    assert list(held) == [0, 1, 1, 1, 1, 0, 1, 1]  # membw has one pod count: never held out
    for f in sf:  # at most one pod count per family out, the family's others train
        for g in ("cpu", "l3"):
            assert len(set(inter[f & (fam == g)])) <= 1 and set(inter[~f & (fam == g)])
    assert cg.setting_folds(fam[:2], inter[:2]) == []
    # mirrors the outer unseen-settings folds: with pods 1-4 of cpu, l3, membw, fold i holds
    # cpu i+1, l3 i+2, membw i+3 (mod 4) out
    fam4 = np.repeat(["cpu", "l3", "membw"], 4)
    inter4 = np.array([f"{n}_x" for n in range(1, 5)] * 3)
    for i, f in enumerate(cg.setting_folds(fam4, inter4)):
        assert sorted(inter4[f].tolist()) == sorted(
            f"{(i + j) % 4 + 1}_x" for j in range(3)) and list(fam4[f]) == ["cpu", "l3", "membw"]
    perf = np.array([1.0, 0.5, 0.1])
    assert np.allclose(cg.from_target(cg.to_target(perf, "log"), "log"), perf)
    assert cg.to_target(perf, "log")[0] == 0 and cg.from_target(np.array([1.4]), "perf") == 1


@pytest.mark.slow
def test_window_without_counters_is_refused(task):
    bad = Task(task.name, task.metrics.filter(~pl.col("metric").str.starts_with("sys:")),
               task.labels, task.windows, task.target_metric)
    with pytest.raises(InvalidInputError, match="without counter values"):
        cg.run_features(bad)


@pytest.mark.slow
def test_series_without_baselines_gets_nan_ratios(task):
    """Documented handling: no own baseline runs at a load -> no base:* reference, NaN ratio
    features (LightGBM routes NaN); the other series keep theirs."""
    lone = "Fight_Club_V01"
    keep = task.windows.filter(~((pl.col("vm") == lone) & (pl.col("family") == "baseline")))
    t = Task(task.name, task.metrics.join(keep.select("window_id"), on="window_id",
                                          how="semi"),
             task.labels.join(keep.select("window_id"), on="window_id", how="semi"), keep,
             task.target_metric)
    f = cg.run_features(t).join(keep.select("window_id", "vm"), on="window_id")
    ratio = f["base:ratio_sys:IPC"]
    assert ratio.filter(f["vm"] == lone).is_nan().all()
    assert not ratio.filter(f["vm"] != lone).is_nan().any()


def test_runtime_refuses_foreign_counters(tmp_path):
    """A saved model asked about metrics it never saw: a clear error, not NaN predictions."""
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(40), 5)
    long = {"window_id": ids, "t": np.tile(np.arange(5.0), 40),
            "metric": np.array(["sys:IPC"] * len(ids)), "value": rng.random(len(ids))}
    _, x = window_features(long, ["sys:IPC"])
    assert x.shape == (40, len(feature_names(["sys:IPC"])))
    cols = [c for c in feature_names(["sys:IPC"]) if c.startswith("stats:")]
    boosters = cg.fit_boosters(x[:, :len(cols)], rng.random(40), cg.Candidate("stats", "perf",
                                                                               rounds=5))
    rt = ColocationRuntime({"model": "gbm-baseline"}, {"counters": ["sys:IPC"],
                           "columns": cols, "target": "perf", "seeds": 1, "half": 0.1},
                           boosters)
    assert rt.interference({"sys:IPC": [0.5, 0.6, 0.7], "rps": 100.0}) <= 1
    with pytest.raises(InvalidInputError, match="none of the model's counters"):
        rt.interference({"cpu_util": [0.5, 0.6]})
    # a model with co-runner features refuses a run that does not say its co-runners
    co = ColocationRuntime({"model": "gbm-baseline"}, {"counters": ["sys:IPC"],
                           "columns": ["stats:rps", "co:cpu"], "target": "log", "seeds": 1,
                           "half": 0.1}, boosters)
    with pytest.raises(InvalidInputError, match="co-runner pods co:cpu, co:l3, co:membw"):
        co.interference({"sys:IPC": [0.5, 0.6], "rps": 100.0})


def test_unknown_corunners_fall_back_to_the_variant_without_them(tmp_path):
    """A model whose variant reads the co-runner pods serves a run that does not say them (a
    mix of unknown make-up) or whose setting no training run had with its fallback variant
    and the fallback's interval, saved and loaded with it."""
    rng = np.random.default_rng(1)
    main_cols, alt_cols = ["stats:rps", "stats:mean_sys:IPC", "co:cpu"], ["stats:rps",
                                                                          "stats:mean_sys:IPC"]
    x = rng.random((60, 3))
    main = cg.fit_boosters(x, rng.random(60), cg.Candidate("stats+base+co", "perf", rounds=5))
    alt = cg.fit_boosters(x[:, :2], 1 - x[:, 1] / 2, cg.Candidate("stats+base", "perf",
                                                                    rounds=20))
    m = cg.ColocationGBM(seeds=1)
    m.state = {"counters": ["sys:IPC"], "columns": main_cols, "target": "perf", "seeds": 1,
               "features": "stats+base+co", "half": 0.1,
               "seen": [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]],
               "fallback": {"columns": alt_cols, "target": "perf", "features": "stats+base",
                            "variant": "stats+base/perf", "half": 0.25}}
    m.boosters, m.fallback_boosters = main, alt
    rt = m.runtime()
    assert m.runtime() is rt  # built once, not on every predict
    m.state = {**m.state, "half": 0.3}  # new state: a new runtime
    assert m.runtime() is not rt and m.runtime().half == 0.3
    m.state["half"] = 0.1
    m.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").glob("*.txt")) == ["fallback_0.txt",
                                                                      "gbm_0.txt"]
    rt = ColocationRuntime.load(tmp_path / "m")
    window = {"sys:IPC": [0.2, 0.4, 0.6], "rps": 100.0}
    xa = np.array([[100.0, 0.4]])
    assert rt.interference(window) == pytest.approx(
        float(np.clip(alt[0].predict(xa)[0], 1e-3, 1.0)))
    placed = rt.interference({**window, "co:cpu": 2.0, "co:l3": 0.0, "co:membw": 0.0})
    assert placed == pytest.approx(float(np.clip(
        main[0].predict(np.array([[100.0, 0.4, 2.0]]))[0], 1e-3, 1.0)))
    # 3 cpu pods: a setting no training run had -> the fallback variant and its interval
    unseen = rt.interference({**window, "co:cpu": 3.0, "co:l3": 0.0, "co:membw": 0.0})
    assert unseen == pytest.approx(rt.interference(window))
    long = pl.DataFrame([{"window_id": w, "t": float(t), "metric": m, "value": v}
                         for w, cpu in (("seen", 2.0), ("unseen", 3.0))
                         for t, ipc in enumerate([0.2, 0.4, 0.6])
                         for m, v in (("sys:IPC", ipc), ("rps", 100.0), ("co:cpu", cpu),
                                      ("co:l3", 0.0), ("co:membw", 0.0))])
    assert list(rt.predict_half(long)["half"]) == [0.1, 0.25]
    got = rt.predict(long)
    assert got["hi"][1] - got["lo"][1] == pytest.approx(min(got["perf"][1] + 0.25, 1)
                                                         - max(got["perf"][1] - 0.25, 0))
    (tmp_path / "m" / "fallback_0.txt").unlink()
    with pytest.raises(ModelVersionError, match="fallback_0.txt missing"):
        ColocationRuntime.load(tmp_path / "m")


@pytest.mark.slow  # trains a small network
def test_network_member_is_averaged_for_unseen_settings_and_served_light(tmp_path,
                                                                         monkeypatch):
    """A model whose unseen-settings regime holds the network member: runs of an unseen
    setting get the mean of the fallback boosters and the network, seen ones the main
    boosters alone; saved and loaded (net/temporal/), it predicts the same, and the
    Estimator serves it (from the models dir or the model's own dir) without importing
    Lightning, polars or DuckDB."""
    from servecast.predictors import base
    from servecast.predictors.interference.predictor import InterferencePredictor
    from servecast.predictors.interference.runtime import Runtime

    rng = np.random.default_rng(2)
    n, steps = 60, 6
    ipc = rng.random((n, steps))
    cpu = rng.integers(0, 3, n).astype(float)
    rows = [{"window_id": f"w{i}", "t": float(t), "metric": m, "value": v}
            for i in range(n) for t in range(steps)
            for m, v in (("sys:IPC", ipc[i, t]), ("rps", 100.0), ("co:cpu", cpu[i]),
                         ("co:l3", 0.0), ("co:membw", 0.0))]
    long = pl.DataFrame(rows)
    perf = 1 - ipc.mean(axis=1) / 2
    net = InterferencePredictor(model="temporal", max_steps=steps, d_model=16, layers=1,
                                epochs=2, batch_size=32).fit(
        long, pl.DataFrame({"window_id": [f"w{i}" for i in range(n)], "perf": perf}))
    x = np.column_stack([np.full(n, 100.0), ipc.mean(axis=1), cpu])
    main = cg.fit_boosters(x, perf, cg.Candidate("stats+base+co", "perf", rounds=10))
    alt = cg.fit_boosters(x[:, :2], perf, cg.Candidate("stats+base", "perf", rounds=10))
    m = cg.ColocationGBM(seeds=1)
    m.state = {"counters": ["sys:IPC"], "columns": ["stats:rps", "stats:mean_sys:IPC",
                                                     "co:cpu"],
               "target": "perf", "seeds": 1, "features": "stats+base+co", "half": 0.1,
               "seen": [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
               "fallback": {"columns": ["stats:rps", "stats:mean_sys:IPC"], "target": "perf",
                            "features": "stats+base", "variant": "stats+base/perf+temporal",
                            "half": 0.2, "net": "temporal"}}
    m.boosters, m.fallback_boosters, m.net_member = main, alt, net
    got = m.predict(long)
    unseen = cpu == 2
    net_perf = net.predict(long)["perf"].to_numpy()
    want_alt = (np.clip(alt[0].predict(x[:, :2]), 1e-3, 1) + net_perf) / 2
    want_main = np.clip(main[0].predict(x), 1e-3, 1)
    assert np.allclose(got["perf"], np.where(unseen, want_alt, want_main))
    assert unseen.any() and not np.allclose(want_alt[unseen], np.clip(
        alt[0].predict(x[unseen][:, :2]), 1e-3, 1))  # the network moved them
    m.save(tmp_path / "models" / "interference")
    assert (tmp_path / "models" / "interference" / "net" / "temporal" / "net.pt").is_file()
    rt = ColocationRuntime.load(tmp_path / "models" / "interference")
    assert isinstance(rt.net, Runtime)
    assert np.array_equal(rt.predict(long)["perf"], got["perf"])
    reads = []
    read = base.read_torch_state
    monkeypatch.setattr(base, "read_torch_state", lambda f: reads.append(f) or read(f))
    again = cg.ColocationGBM.load(tmp_path / "models" / "interference")
    assert len(reads) == 1  # the network member is read once
    assert again.runtime().net.net is again.net_member.net  # and served from that copy
    assert again.predict(long).equals(got)  # bit-identical after the round trip
    window = {"sys:IPC": ipc[0].tolist(), "rps": 100.0, "co:cpu": 2.0, "co:l3": 0.0,
              "co:membw": 0.0}
    for root in (tmp_path / "models", tmp_path / "models" / "interference"):
        code = ("import sys\nimport servecast.estimator as e\n"
                f"est = e.Estimator.load({str(root)!r})\n"
                f"x = est.interference({window!r})\n"
                "bad = sorted({m.split('.')[0] for m in sys.modules} & {'lightning', "
                "'pytorch_lightning', 'polars', 'duckdb'})\n"
                "print(repr(x), bad, est.runtime('interference').family)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        assert out[1:] == ["[]", "gbm-baseline"]
        assert float(out[0]) == pytest.approx(rt.interference(window))
    (tmp_path / "models" / "interference" / "net" / "temporal" / "net.pt").unlink()
    with pytest.raises(ModelVersionError, match="net.pt: missing"):
        ColocationRuntime.load(tmp_path / "models" / "interference")
