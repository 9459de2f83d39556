"""Text model on a small ShareGPT sample: offline embeddings (cached), PCA + LightGBM quantile
heads, save/load and the text runtime."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from servecast.errors import InvalidInputError
from servecast.predictors.output_length import OutputLengthPredictor, create
from servecast.predictors.output_length.metrics import split

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

ROWS = 400  # embedding is the CPU cost; the benchmark runs the large sample


@pytest.fixture(scope="module")
def sharegpt_db(tmp_path_factory, data):
    """A closed store file with the shared ShareGPT sample ingested (trace `sharegpt`), built
    once for the module: open it read-only."""
    from servecast.store import Store

    path = tmp_path_factory.mktemp("sg") / "s.duckdb"
    with Store(path) as store:
        store.ingest("sharegpt", [data / "llm/sharegpt"], trace="sharegpt")
    return path


@pytest.fixture(scope="module")
def sharegpt(sharegpt_db):
    from servecast.store import Store

    with Store(sharegpt_db, read_only=True) as store:
        df = store.requests("sharegpt").pl()
    first = df["session_id"].unique(maintain_order=True)[:160]
    return df.filter(pl.col("session_id").is_in(first.implode()))[:ROWS]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """$SERVECAST_CACHE (reused across runs) or a fresh temporary folder."""
    import os

    env = os.environ.get("SERVECAST_CACHE")
    return os.path.join(env, "embeddings") if env else str(tmp_path_factory.mktemp("emb"))


def test_embeddings_are_cached_and_offline(sharegpt, cache, monkeypatch):
    from pathlib import Path

    from servecast.predictors.output_length import embeddings

    texts = sharegpt["prompt_text"][:20].to_list()
    a = embeddings.embed(texts, cache=Path(cache))
    assert a.shape == (20, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
    monkeypatch.setattr(embeddings, "encoder", lambda *_: pytest.fail("cache miss"))
    b = embeddings.embed(texts[::-1], cache=Path(cache))
    assert np.array_equal(a[::-1], b)


def test_text_model_fit_predict_save_load(sharegpt, cache, tmp_path):
    train, test, how = split(sharegpt)
    assert how.startswith("seeded") and "conversation" in how
    assert not set(train["session_id"]) & set(test["session_id"])
    model = create("text", cache=cache).fit(train)
    pred = model.predict(test)
    assert pred.height == test.height
    assert (pred["p50"] <= pred["p90"]).all() and (pred["p90"] <= pred["p99"]).all()
    m = model.evaluate(test)
    assert m["kendall_tau"] > 0.1  # learns something even from ~240 training rows
    path = model.save(tmp_path / "text")
    assert (path / "tfidf_ridge.npz").is_file()  # the lexical feature travels with the model
    again = OutputLengthPredictor.load(path)
    assert np.allclose(again.predict(test[:20]).to_numpy(), pred[:20].to_numpy())
    from servecast.estimator import Estimator

    est = Estimator.load(path)
    row = test.row(0, named=True)
    e = est.output_length(row["prompt_tokens"], prompt_text=row["prompt_text"])
    batch = est.output_length_batch(test[:5].with_columns(pl.lit(None).alias("session_id")))
    assert np.allclose(e, batch.row(0), rtol=1e-3)
    with pytest.raises(InvalidInputError, match="prompt_text"):
        est.output_length(10)
    with pytest.raises(InvalidInputError, match="prompt_text"):
        model.predict({"prompt_tokens": [3]})
    # a conversation served turn by turn (estimate, then observe the output) gets what the
    # batch path computes from the whole conversation: session codes and conversation memory
    # (the online calibration frozen: it would move the single estimates)
    est.runtime("output_length").online.frozen = True
    sid = test.group_by("session_id").len().sort("len", "session_id")["session_id"][-1]
    conv = test.filter(pl.col("session_id") == sid).sort("turn")
    assert conv.height >= 3 and conv["turn"].to_list() == list(range(1, conv.height + 1))
    served = []
    for r in conv.iter_rows(named=True):
        served.append(est.output_length(r["prompt_tokens"], prompt_text=r["prompt_text"],
                                        session_id=sid))
        est.observe_output(sid, r["prompt_tokens"], r["output_tokens"])
    assert np.allclose(np.array(served), est.output_length_batch(conv).to_numpy(), rtol=1e-3)
    assert np.allclose(model.predict(conv).to_numpy(), est.output_length_batch(conv).to_numpy(),
                       rtol=1e-3)


def test_conversation_memory_known_answer():
    """Features of each turn from the earlier turns of its session with a known output."""
    from servecast.predictors.output_length.conversation import SHARPNESS, memory_features

    a, b = np.eye(3)[0], np.eye(3)[1]
    c = (2 * a + b) / np.sqrt(5)  # cos(a, c) = 0.894, cos(b, c) = 0.447
    df = pl.DataFrame({"session_id": ["s", "s", "s", "t", None],
                       "turn": [3, 1, 2, 1, 1], "output_tokens": [None, 9, 99, 5, 7]})
    f = memory_features(df, np.stack([c, a, b, a, a]))
    l10, l100 = np.log(10), np.log(100)
    assert np.isnan(f[[1, 3, 4]]).all()  # first turns, no session
    assert np.allclose(f[2], [l10, 0.0, l10, l10, 0.0, l10])
    w = np.exp(SHARPNESS * np.array([2, 1]) / np.sqrt(5))
    assert np.allclose(f[0], [l100, 1 / np.sqrt(5), (l10 + l100) / 2, l10, 2 / np.sqrt(5),
                              (w @ [l10, l100]) / w.sum()])


def test_fine_tuned_encoder_trains_once_and_travels_with_the_model(sharegpt, cache, tmp_path,
                                                                   monkeypatch):
    """finetune_epochs > 0: the encoder is tuned with Lightning once (the refit on all rows
    reuses it), moves away from the pretrained weights, is saved with the model, and the
    loaded model, the Estimator and predict agree."""
    import torch

    from servecast.estimator import Estimator
    from servecast.predictors.output_length import finetune as ft
    from servecast.predictors.output_length.embeddings import TUNED_FILE, encoder

    calls = []
    real = ft.finetune
    monkeypatch.setattr(ft, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    train, test, _ = split(sharegpt[:300])
    model = create("text", n_estimators=20, cache=cache, finetune_epochs=1).fit(train)
    assert calls == [1]
    tuned = model.tuned[0].auto_model.state_dict()
    base = encoder()[0].auto_model.state_dict()
    moved = [k for k in tuned if not torch.equal(tuned[k], base[k])]
    assert len(moved) > len(tuned) // 2  # the shared pretrained encoder stays untouched
    pred = model.predict(test[:8])
    path = model.save(tmp_path / "tuned")
    assert (path / TUNED_FILE).is_file()
    again = OutputLengthPredictor.load(path).predict(test[:8])
    assert np.allclose(again.to_numpy(), pred.to_numpy(), rtol=1e-5)  # fp16 both ways
    row = test.row(0, named=True)
    e = Estimator.load(path).output_length(row["prompt_tokens"], prompt_text=row["prompt_text"])
    assert np.allclose(e, again.row(0), rtol=1e-3)
    model.fit(train[:150])  # new data, new fit: the encoder is tuned again, from pretrained
    assert calls == [1, 1]


def test_text_model_from_another_version_is_refused(sharegpt, cache, tmp_path):
    """A dir holding the former MLP head (mlp.npz, MLP params) gives ModelVersionError."""
    import json

    from servecast.errors import ModelVersionError
    from servecast.estimator import Estimator

    model = create("text", n_estimators=20, cache=cache).fit(sharegpt[:250])
    path = model.save(tmp_path / "text")
    (path / "text.json").write_text(json.dumps({"embedding_dim": 384}))
    with pytest.raises(ModelVersionError, match="retrain"):
        OutputLengthPredictor.load(path)
    with pytest.raises(ModelVersionError, match="retrain"):
        Estimator.load(path).output_length(10, prompt_text="hello")
    card = json.loads((path / "model_card.json").read_text())
    card["params"] = {"epochs": 6, "hidden": 256}
    (path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelVersionError, match="retrain"):
        OutputLengthPredictor.load(path)


def test_neighbour_features_leave_the_own_conversation_out(sharegpt, cache):
    """Training rows see only other conversations' prompts; queries see all; brute force."""
    from pathlib import Path

    from servecast.predictors.output_length.embeddings import embed
    from servecast.predictors.output_length.text_features import KS, NEIGHBOUR, NeighbourIndex

    df = sharegpt[:120]
    E = embed(df["prompt_text"].to_list(), cache=Path(cache))
    ly = np.log1p(df["output_tokens"].to_numpy().astype(float))
    groups = df["session_id"].to_numpy()
    index = NeighbourIndex(E, ly)
    own = index.features(E, groups)
    free = index.features(E)
    k, top1 = KS[0], NEIGHBOUR.index("nn_top1")
    for i in (0, 57, 119):
        sim = E @ E[i]
        other = np.flatnonzero(groups != groups[i])
        near = other[np.argsort(-sim[other], kind="stable")[:k]]
        assert own[i, 0] == pytest.approx(np.median(ly[near]), rel=1e-6)
        assert own[i, top1] == pytest.approx(sim[near[0]], rel=1e-5)
        assert free[i, top1] == pytest.approx(1.0, abs=1e-5)  # itself, in the unrestricted index


def test_lexical_neighbours_compare_tfidf_rows_and_survive_a_save(sharegpt, tmp_path):
    """LexicalIndex: the nearest training prompts by TF-IDF cosine (brute force), the own
    conversation left out on training rows, the similarity-weighted mean between the nearest
    outputs' extremes; the same features after save / load."""
    from servecast.predictors.output_length.text_features import NEIGHBOUR, LexicalIndex
    from servecast.predictors.output_length.tfidf import TextRidge, numeric

    df = sharegpt[:150]
    texts = df["prompt_text"].to_list()
    ly = np.log1p(df["output_tokens"].to_numpy().astype(float))
    ridge = TextRidge().fit(texts, numeric(df["prompt_tokens"].to_numpy(),
                                           np.full(df.height, np.nan)), ly)
    T = ridge.tfidf(texts)
    groups = df["session_id"].to_numpy()
    index = LexicalIndex(T, ly)
    own = index.features(T, groups)
    col = {n: i for i, n in enumerate(NEIGHBOUR)}
    for i in (0, 70, 149):
        sim = (T @ T[i].T).toarray().ravel()
        other = np.flatnonzero(groups != groups[i])
        near = other[np.argsort(-sim[other], kind="stable")]
        assert own[i, col["nn_top1"]] == pytest.approx(sim[near[0]], rel=1e-5)
        assert own[i, col["nn10_median"]] == pytest.approx(np.median(ly[near[:10]]), rel=1e-6)
        lo, hi = ly[near[:50]].min(), ly[near[:50]].max()
        assert lo - 1e-9 <= own[i, col["nn_soft"]] <= hi + 1e-9
    index.save(tmp_path)
    again = LexicalIndex.load(tmp_path).features(ridge.tfidf(texts[:5]))
    np.testing.assert_allclose(again, index.features(T[:5]))
    assert again[:, col["nn_top1"]] == pytest.approx(1.0, abs=1e-5)  # itself, unrestricted


def test_wording_reads_the_amount_asked_for_and_keywords():
    from servecast.predictors.output_length.text_features import KEYWORDS, wording

    w = wording(["Write a 500 words essay, then list 3 ideas.", "hi"])
    assert w.shape == (2, 3 + len(KEYWORDS))
    assert w[0, 0] == pytest.approx(np.log1p(500)) and w[1, 0] == 0
    assert w[0, 3 + KEYWORDS.index("essay")] == 1 and w[1, 3:].sum() == 0


def test_pairwise_rank_loss_known_answer():
    """RankNet term of the fine-tuning loss: softplus(-2 (s_i - s_j)) per ordered pair whose
    targets differ by > 0.1, averaged; ties within the gap are ignored."""
    import math

    import torch

    from servecast.predictors.output_length.finetune import pairwise_rank_loss

    y = torch.tensor([1.0, 2.0, 2.05])  # (1, 2) and (1, 3) count, (2, 3) is within the gap
    right = torch.tensor([0.0, 1.0, 5.0])
    # each counted pair appears twice (i, j) and (j, i) with the same value
    want = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-10.0))) / 2
    assert float(pairwise_rank_loss(right, y)) == pytest.approx(want, rel=1e-6)
    wrong = torch.tensor([1.0, 0.0, 0.0])
    assert float(pairwise_rank_loss(wrong, y)) == pytest.approx(math.log1p(math.exp(2.0)))
    assert float(pairwise_rank_loss(right, torch.ones(3))) == 0.0  # no pair: nothing to rank


def test_text_baselines_and_lexical_feature(sharegpt, cache):
    """TF-IDF + ridge and previous-turn baselines on real prompts; the text model without its
    lexical family has fewer inputs (the ridge's prediction, the lexical neighbours) and saves
    neither."""
    from servecast.predictors.output_length.baselines import PreviousTurn, TfidfRidge
    from servecast.predictors.output_length.text_features import NEIGHBOUR

    train, test, _ = split(sharegpt)
    ridge = TfidfRidge().fit(train)
    m = ridge.evaluate(test)
    assert m["kendall_tau"] > 0.1 and m["n"] == test.height
    prev = PreviousTurn().fit(train)
    p50 = prev._raw(test)[:, 0]
    later = test.sort("session_id", "turn").with_columns(
        pl.col("output_tokens").shift(1).over("session_id").alias("prev"))
    row = later.filter(pl.col("prev").is_not_null()).row(0, named=True)
    i = test["request_id"].to_list().index(row["request_id"])
    assert p50[i] == pytest.approx(row["prev"])  # p50 = the previous turn's output
    with pytest.raises(InvalidInputError, match="prompt_text"):
        ridge.predict(test.drop("prompt_text"))
    plain = create("text", lexical=False, n_estimators=20, cache=cache).fit(train)
    full = create("text", n_estimators=20, cache=cache).fit(train)
    assert plain.ridge is None and plain.lexicon is None
    assert full.ridge is not None and full.lexicon is not None
    assert (full.boosters[0].num_feature()
            == plain.boosters[0].num_feature() + 1 + len(NEIGHBOUR))


def test_train_text_scores_it_against_the_text_baselines(sharegpt_db, cache, tmp_path,
                                                         monkeypatch):
    """`train_output_length(text=True)` on a real store: the held-out table carries the
    TF-IDF + ridge and previous-turn baselines, and the card records whether it beats them."""
    import json
    from pathlib import Path

    from servecast.predictors.output_length.train import losses, train_output_length
    from servecast.store import Store

    monkeypatch.setenv("SERVECAST_CACHE", str(Path(cache).parent))  # beside the module cache
    with Store(sharegpt_db, read_only=True) as store:  # the module's ShareGPT ingest
        res = train_output_length(store, "sharegpt", tmp_path / "m", fast=True, text=True,
                                  max_rows=ROWS)
    assert {"tfidf_ridge", "previous_turn", "global", "prompt_length_only"} <= set(
        res["baselines"])
    assert res["warnings"] == losses(res["metrics"], res["baselines"])
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert card["beats_baselines"] is (not res["warnings"])
    assert card["baselines"]["tfidf_ridge"]["kendall_tau"] == pytest.approx(
        res["baselines"]["tfidf_ridge"]["kendall_tau"])
    # the text runtime calibrates from a completion reported under its estimate's id
    from servecast.estimator import Estimator

    est = Estimator.load(tmp_path / "m")
    row = res["test"].row(0, named=True)
    est.output_length(row["prompt_tokens"], prompt_text=row["prompt_text"], request_id="q")
    assert est.observe_output(None, row["prompt_tokens"], row["output_tokens"], request_id="q")
    assert est.output_calibration()["observed"] == 1
