"""InterferencePredictor on synthetic windows with a known answer, plus bad-input handling.

The synthetic set uses metric names, a sampling rate and a label unlike Azure's: perf drops
when a co-runner's `llc_miss_rate` rises in the last steps, and windows differ in length and
in which metrics they carry.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from servecast.errors import InvalidInputError, ModelVersionError, UnknownNameError
from servecast.predictors.interference import InterferencePredictor
from servecast.predictors.interference.fixture import windows as synthetic
from servecast.predictors.interference.frames import clean_metrics
from servecast.predictors.interference.runtime import Runtime

torch.set_num_threads(1)  # the shared test machine has 2 cores


@pytest.fixture(scope="module")
def data():
    return synthetic(500, 0), synthetic(150, 1)


@pytest.fixture(scope="module")
def dual(data):
    (m, lab), _ = data
    return InterferencePredictor("dual", max_steps=10, d_model=32, layers=1, epochs=8,
                                 batch_size=64, lr=3e-3).fit(m, lab)


def test_dual_learns_known_answer(data, dual):
    _, (tm, tl) = data
    res = dual.evaluate(tm, tl)
    const = InterferencePredictor("mean").fit(*data[0]).evaluate(tm, tl)
    assert res["n"] == 150
    assert res["mae"] < 0.5 * const["mae"], (res, const)
    pred = dual.predict(tm)
    assert pred.columns == ["window_id", "perf"]
    assert pred["perf"].is_between(0, 1).all()
    assert pred["window_id"].to_list() == tm["window_id"].unique(maintain_order=True).to_list()


def test_gbm_and_temporal_baselines_fit(data):
    (m, lab), (tm, tl) = data
    g = InterferencePredictor("gbm", max_steps=10, gbm_trees=80).fit(m, lab)
    assert g.evaluate(tm, tl)["mae"] < 0.1
    t = InterferencePredictor("temporal", max_steps=10, d_model=16, layers=1, epochs=1)
    assert t.fit(m, lab).predict(tm).height == 150


def test_last_value_baseline_uses_target_metric():
    m = pl.DataFrame({"window_id": [1, 1, 1, 2, 2], "t": [0, 1, 2, 0, 1],
                      "metric": ["perf_hist"] * 3 + ["cpu"] * 2,
                      "value": [0.5, 0.6, 0.9, 3.0, 4.0]})
    lab = pl.DataFrame({"window_id": [1, 2], "perf": [0.8, 0.6]})
    last = InterferencePredictor("last", target_metric="perf_hist", val_frac=0).fit(m, lab)
    ma = InterferencePredictor("moving_average", target_metric="perf_hist", ma_k=2,
                               val_frac=0).fit(m, lab)
    assert last.predict(m)["perf"].to_list() == pytest.approx([0.9, 0.7])  # 2: train mean
    assert ma.predict(m)["perf"].to_list() == pytest.approx([0.75, 0.7])


def test_save_load_runtime_roundtrip(tmp_path, data, dual):
    (_, _), (tm, _) = data
    dual.save(tmp_path / "m")
    rt = Runtime.load(tmp_path / "m")
    a = dual.predict(tm)["perf"].to_numpy()
    b = rt.predict(tm)["perf"]
    np.testing.assert_allclose(a, b, rtol=1e-5)
    one = tm.filter(pl.col("window_id") == "w3")
    assert rt.interference(one) == pytest.approx(a[3], rel=1e-5)
    as_dict = {m: g.sort("t")["value"].to_list() for (m,), g in one.group_by("metric")}
    assert 0 < rt.interference(as_dict) <= 1
    from servecast.estimator import Estimator

    assert Estimator.load(tmp_path).interference(as_dict) == pytest.approx(
        rt.interference(as_dict))
    with pytest.raises(ModelVersionError):
        Runtime.load(tmp_path)


def test_bad_inputs_raise_clear_errors(data, dual):
    (m, lab), _ = data
    with pytest.raises(InvalidInputError, match=r"outside \(0, 1\]"):
        InterferencePredictor("mean").fit(m, lab.with_columns(pl.lit(1.5).alias("perf")))
    with pytest.raises(InvalidInputError, match="not finite|outside"):
        InterferencePredictor("mean").fit(m, lab.with_columns(pl.lit(float("nan")).alias("perf")))
    with pytest.raises(InvalidInputError, match="not in metrics"):
        InterferencePredictor("mean").fit(m, pl.concat([lab, pl.DataFrame(
            {"window_id": ["nope"], "perf": [0.5]})]))
    with pytest.raises(InvalidInputError, match="without a label"):
        InterferencePredictor("mean").fit(m, lab.head(10))
    with pytest.raises(InvalidInputError, match="missing column"):
        dual.predict(m.drop("t"))
    with pytest.raises(InvalidInputError, match="no rows"):
        dual.predict(m.head(0))
    with pytest.raises(InvalidInputError, match="no finite value of a known metric"):
        dual.predict(pl.DataFrame({"window_id": [1], "t": [0.0], "metric": ["unknown"],
                                   "value": [1.0]}))
    with pytest.raises(InvalidInputError, match="no finite value"):
        dual.predict(pl.DataFrame({"window_id": [1, 1], "t": [0.0, 1.0],
                                   "metric": ["ipc", "llc_miss_rate"],
                                   "value": [float("nan"), float("inf")]}))
    with pytest.raises(InvalidInputError, match="non-finite t"):
        dual.predict(pl.DataFrame({"window_id": [1], "t": [float("nan")], "metric": ["ipc"],
                                   "value": [1.0]}))
    with pytest.raises(UnknownNameError):
        InterferencePredictor("cloudformer")


def test_nan_values_are_masked_not_fatal(data, dual):
    _, (tm, _) = data
    holed = tm.with_columns(pl.when(pl.col("metric") == "net_rx_kpps").then(float("nan"))
                            .otherwise(pl.col("value")).alias("value"))
    out = dual.predict(holed)
    assert out.height == 150 and out["perf"].is_finite().all()


def test_models_of_the_previous_format_are_refused(tmp_path, data):
    """Format 1 kept the hyper-parameters in interference.json (patched with setdefault at
    load); format 2 loads the card's params verbatim, so a format-1 dir is refused."""
    import json

    (m, lab), _ = data
    old = InterferencePredictor("dual", max_steps=10, d_model=16, layers=1, epochs=1,
                                skip=False).fit(m, lab)
    old.save(tmp_path / "old")
    card_file = tmp_path / "old" / "model_card.json"
    card = json.loads(card_file.read_text())
    card["format"] = 1
    card_file.write_text(json.dumps(card))
    for load in (InterferencePredictor.load, Runtime.load):
        with pytest.raises(ModelVersionError, match="model format 1.*retrain"):
            load(tmp_path / "old")


def test_refit_on_train_plus_val_after_validation(tmp_path, data):
    """refit=True: epochs / trees are picked on the val split, then the model is retrained
    on train + val (val windows weighted by recent_weight); config round-trips."""
    (m, lab), (tm, tl) = data
    va_ids = lab["window_id"].to_list()[400:]  # validation: the windows after the first 400
    p = InterferencePredictor("dual", max_steps=10, d_model=16, layers=1, epochs=3,
                              batch_size=64, lr=3e-3, refit=True, recent_weight=2)
    p.fit(m, lab.with_columns(validation=pl.col("window_id").is_in(va_ids)))
    assert p.card["training"]["refit_epochs"] == p.card["training"]["best_epoch"] + 1
    assert p.evaluate(tm, tl)["n"] == 150
    g = InterferencePredictor("gbm", max_steps=10, gbm_trees=40, refit=True).fit(m, lab)
    assert 1 <= g.card["training"]["refit_trees"] <= 40
    p.save(tmp_path / "r")
    back = InterferencePredictor.load(tmp_path / "r")
    assert back.get_params()["refit"] and back.get_params()["recent_weight"] == 2
    np.testing.assert_allclose(back.predict(tm)["perf"].to_numpy(),
                               p.predict(tm)["perf"].to_numpy(), rtol=1e-5)


def test_seed_ensemble_averages_members_and_roundtrips(tmp_path, data):
    """n_seeds=2: two nets of one architecture from seeds 0 and 1, prediction = their mean;
    save/load and the Runtime give the same numbers."""
    (m, lab), (tm, _) = data
    p = InterferencePredictor("dual", max_steps=10, d_model=16, layers=1, epochs=1,
                              batch_size=64, n_seeds=2).fit(m, lab)
    assert len(p.card["training"]["seeds"]) == 2
    win = p._windows(clean_metrics(tm), tm["window_id"].unique(maintain_order=True).to_list())
    with torch.no_grad():
        v, k = torch.from_numpy(win.values), torch.from_numpy(win.mask)
        mean = torch.stack([net(v, k) for net in p.net.members]).mean(0).numpy()
    np.testing.assert_allclose(p.predict(tm)["perf"].to_numpy(), np.clip(mean, 1e-3, 1),
                               rtol=1e-5)
    p.save(tmp_path / "e")
    np.testing.assert_allclose(Runtime.load(tmp_path / "e").predict(tm)["perf"],
                               p.predict(tm)["perf"], rtol=1e-5)
    with pytest.raises(InvalidInputError, match="n_seeds"):
        InterferencePredictor("dual", n_seeds=0)


@pytest.mark.slow  # trains a network for 120 optimizer steps (> 5 s on the shared CPU)
def test_across_metrics_model_with_a_step_budget(tmp_path, data):
    """Attention across the metrics of each step, trained for a budget of optimizer steps
    (not epochs): learns the synthetic answer and round-trips through the runtime."""
    (m, lab), (tm, tl) = data
    p = InterferencePredictor("across", max_steps=10, d_model=16, heads=2, layers=1,
                              batch_size=64, lr=3e-3, train_steps=120, val_frac=0)
    assert p.epochs_for(len(lab)) == 15  # 500 windows: 8 batches of 64 per epoch, 120 steps
    assert p.epochs_for(40) == 120  # one batch per epoch: the budget stays 120 steps
    p.fit(m, lab)
    assert p.card["training"]["optimizer_steps"] == 15 * 8
    const = InterferencePredictor("mean").fit(m, lab).evaluate(tm, tl)
    assert p.evaluate(tm, tl)["mae"] < 0.6 * const["mae"]
    p.save(tmp_path / "m")
    np.testing.assert_allclose(Runtime.load(tmp_path / "m").predict(tm)["perf"],
                               p.predict(tm)["perf"].to_numpy(), rtol=1e-5)
    with pytest.raises(InvalidInputError, match="train_steps must be >= 0"):
        InterferencePredictor("across", train_steps=-1)
