"""The small-data options of `pretrain` on real NTUA series (Memento_V01 trains, Fight_Club_V01
validates, Memento_V02 is held out): masked-counter pretraining learns, sees no test
window, and changes what the temporal network and the GBM predict."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from servecast.errors import UnknownNameError
from servecast.predictors.interference import evaluate as ev
from servecast.predictors.interference import pretrain
from servecast.predictors.interference.baselines import window_stats
from servecast.predictors.interference.colocation import colocation_task
from servecast.predictors.interference.frames import clean_metrics
from servecast.store import Store

SERIES = ("Memento_V01", "Memento_V02", "Fight_Club_V01")
SETTINGS = dict(d_model=16, layers=1, lr=5e-3, batch_size=32, train_steps=20, n_seeds=1,
                gbm_trees=100, epochs=1)
STEPS = 10


@pytest.fixture(scope="module")
def task(tmp_path_factory, data):
    store = Store(tmp_path_factory.mktemp("ntua_pre") / "s.duckdb")
    store.ingest("ntua-interference", [data / "vm/ntua_interference" / s for s in SERIES])
    yield colocation_task(store, test_series=["Memento_V02"], val_series=["Fight_Club_V01"])
    store.close()


def _pred(p, task) -> np.ndarray:
    tm, tl = task.part("test")
    return tl.join(p.predict(tm), on="window_id", suffix="_pred")["perf_pred"].to_numpy()


@pytest.mark.slow  # ingests three real series, trains two networks
def test_pretraining_learns_and_changes_the_network(task):
    norm, state, log = pretrain._pretrained(task, SETTINGS, STEPS, pre_steps=60)
    assert log["windows"] == task.windows.filter(pl.col("split") != "test").height
    assert log["loss_last"] < log["loss_first"]  # reconstruction of hidden counters improved
    assert state and all(k.startswith(pretrain.ENCODER) for k in state)
    plain = ev.train_model(task, "temporal", SETTINGS, max_steps=STEPS)
    pre = pretrain.train_model(task, "temporal-pre", SETTINGS, STEPS, pre_steps=60)
    assert pre.card["pretraining"]["steps"] == 60
    a, b = _pred(plain, task), _pred(pre, task)
    assert len(a) == len(b) == task.windows.filter(pl.col("split") == "test").height
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.slow  # ingests three real series
def test_gbm_on_embeddings_adds_features_and_changes_the_gbm(task):
    emb = pretrain.train_model(task, "gbm-embed", SETTINGS, STEPS, pre_steps=60)
    tm, tl = task.part("test")
    ids, x = emb.features(tm, tl["window_id"].to_list())
    plain = ev.train_model(task, "gbm", SETTINGS, max_steps=STEPS)
    win = plain._windows(clean_metrics(tm), ids)
    assert x.shape[1] == window_stats(win.values, win.mask).shape[1] + 2 * SETTINGS["d_model"]
    assert np.abs(_pred(emb, task) - _pred(plain, task)).max() > 1e-3
    with pytest.raises(UnknownNameError, match="gbm-embed"):
        pretrain.train_model(task, "nope", SETTINGS, STEPS)


def test_embedding_is_what_the_network_pools_before_its_head():
    """`embed` and the pretraining read the network's own encoder (`InterferenceNet.encode`):
    the embedding of a state equals, bit for bit, the first 2 x d_model inputs of the head
    of a temporal network holding that state (masked mean of the steps, then the last)."""
    import torch

    rng = np.random.default_rng(3)
    values = rng.standard_normal((24, 8, 4)).astype(np.float32)
    mask = rng.random((24, 8, 4)) < 0.7
    mask[0, :3] = False  # padded steps
    hp = {"d_model": 8, "layers": 1}
    state, log = pretrain.pretrain_encoder(values, mask, hp, steps=5, batch=8)
    assert log["steps"] == 5 and set(state) and all(k.startswith(pretrain.ENCODER)
                                                     for k in state)
    net = pretrain._net(4, 8, hp)
    net.load_state_dict(state, strict=False)
    net.eval()
    seen = []
    net.head.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    with torch.no_grad():
        net(torch.from_numpy(values), torch.from_numpy(mask))
    got = pretrain.embed(state, values, mask, hp)
    assert got.shape == (24, 16)
    assert np.array_equal(got, seen[0][:, :16].numpy())


@pytest.mark.slow  # trains two small networks (Lightning start-up)
def test_temporal_pre_saves_and_loads_through_the_registry(tmp_path):
    """`temporal-pre` is the interference kind's temporal network with `pre_steps`: its
    parameters are plain JSON, the registry's predictor and runtime load it and predict
    the same; the old form (tensors in trainer_kw) is refused before anything is written."""
    import json

    import torch

    from servecast.errors import InvalidInputError
    from servecast.predictors.registry import get

    kind = get("interference")
    fx = kind.fixture()
    hp = dict(max_steps=10, d_model=16, heads=2, layers=1, epochs=1, batch_size=64)
    p = kind.predictor()("temporal", pre_steps=10, **hp).fit(fx.train, fx.train_target)
    assert p.card["pretraining"]["steps"] == 10
    assert p.card["pretraining"]["windows"] == fx.train["window_id"].n_unique()
    path = p.save(tmp_path / "pre")
    card = json.loads((path / "model_card.json").read_text())
    assert card["params"] == p.get_params() and card["params"]["pre_steps"] == 10
    assert card["pretraining"]["steps"] == 10
    want = p.predict(fx.test)
    assert kind.predictor().load(path).predict(fx.test).equals(want)
    np.testing.assert_allclose(kind.runtime().load(path).predict(fx.test)["perf"],
                               want["perf"].to_numpy(), rtol=1e-6)
    plain = kind.predictor()("temporal", **hp).fit(fx.train, fx.train_target)
    assert np.abs(plain.predict(fx.test)["perf"] - want["perf"]).max() > 1e-4
    bad = kind.predictor()("temporal", trainer_kw={"init": {"pos": torch.zeros(1)}}, **hp)
    bad.norm, bad.net = p.norm, p.net
    with pytest.raises(InvalidInputError, match="no JSON form.*pre_steps"):
        bad.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(InvalidInputError, match="pre_steps=5"):
        kind.predictor()("gbm", pre_steps=5)
