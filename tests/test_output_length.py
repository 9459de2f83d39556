"""Output-length predictors on real traces (Azure conversation, Mooncake, BurstGPT head)
plus small synthetic frames where a feature needs a known answer."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from servecast.errors import InvalidInputError, ModelVersionError, UnknownNameError
from servecast.predictors.output_length import OutputLengthPredictor, create
from servecast.predictors.output_length.buckets import log_bucket
from servecast.predictors.output_length.core import online_evaluate
from servecast.predictors.output_length.features import Encoder
from servecast.predictors.output_length.metrics import split
from servecast.predictors.output_length.runtime import Runtime
from servecast.predictors.output_length.train import load_requests

SMALL = {"n_estimators": 40, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def llm_store(tmp_path_factory, data):
    """A store with the LLM request traces these tests read (not the whole shared set)."""
    from servecast.datasets.catalog import ingest_shared
    from servecast.store import Store

    store = Store(tmp_path_factory.mktemp("ol") / "llm.duckdb")
    ingest_shared(store, ("azure_conv", "mooncake_conversation", "burstgpt_head54"), data)
    yield store
    store.close()


@pytest.fixture(scope="module")
def azure(llm_store):
    return split(load_requests(llm_store, "azure_conv"))


@pytest.fixture(scope="module")
def fitted(azure, tmp_path_factory):
    train, _, _ = azure
    model = create("metadata", **SMALL).fit(train)
    path = model.save(tmp_path_factory.mktemp("model") / "output_length")
    return model, path


def test_time_split_is_ordered(azure):
    train, test, how = azure
    assert how.startswith("time-ordered")
    assert train["arrival_s"].max() <= test["arrival_s"].min()
    assert abs(train.height / (train.height + test.height) - 0.7) < 0.01


def test_metadata_beats_baselines_on_azure_conv(azure, fitted):
    train, test, _ = azure
    model, _ = fitted
    m = model.evaluate(test)
    seg = create("segment").fit(train).evaluate(test)
    bins = create("prompt_bins").fit(train).evaluate(test)
    assert m["mae_p50"] < bins["mae_p50"] < seg["mae_p50"]
    assert m["kendall_tau"] > bins["kendall_tau"] > 0.4
    assert 0.85 <= m["coverage_p90"] <= 0.95
    pred = model.predict(test)
    assert pred.columns == ["p50", "p90", "p99", "mean"] and pred.height == test.height
    assert (pred["p50"] <= pred["p90"]).all() and (pred["p90"] <= pred["p99"]).all()


def test_global_baseline_is_the_empirical_quantile(azure):
    train, test, _ = azure
    model = create("global", calib_frac=0.0).fit(train)
    y = train["output_tokens"].to_numpy()
    p = model.predict(test[:5])
    assert p["p50"][0] == pytest.approx(np.quantile(y, 0.5), rel=1e-5)
    assert p["mean"][0] == pytest.approx(y.mean(), rel=1e-5)


def test_save_load_runtime_agree(azure, fitted):
    _, test, _ = azure
    model, path = fitted
    loaded = OutputLengthPredictor.load(path)
    rows = test[:300]
    a = model.predict(rows).to_numpy()
    assert np.allclose(a, loaded.predict(rows).to_numpy())
    rt = Runtime.load(path)
    assert np.allclose(rt.output_length_batch(rows).to_numpy(), a, rtol=1e-4)
    # single calls without observe / arrival_s: the frame of prompts alone (no outputs, so no
    # earlier row of the frame is in the history; no arrival, so no time since the last one)
    prompts = rows.select("prompt_tokens")[:50]
    single = [rt.output_length(int(p)) for p in prompts["prompt_tokens"]]
    assert np.allclose(np.array(single), model.predict(prompts).to_numpy(), rtol=1e-4)


def test_online_calibration_restores_p90_coverage_under_drift(azure, fitted):
    _, test, _ = azure
    drifted = test.with_columns(pl.col("output_tokens") * 3)
    static = fitted[0].evaluate(drifted)["coverage_p90"]
    model = OutputLengthPredictor.load(fitted[1])
    online = online_evaluate(model, drifted, chunk=200)["coverage_p90"]
    assert static < 0.6
    assert 0.8 <= online <= 0.95


def test_adaptive_level_recovers_coverage_after_a_shift():
    """Outputs triple after calibration: the adaptive conformal level covers the next
    requests far better than fixed levels, the learned level (scale) restores p90 coverage
    from the second chunk of 200 on and learns the factor 3; the state survives a save."""
    from servecast.predictors.output_length.calibration import Calibrator

    rng = np.random.default_rng(0)
    raw = np.tile([100.0, 190.0, 320.0], (200, 1))  # ~ true p50/p90/p99 of lognormal(100, .5)
    cover, after = {}, {}
    for rate, level_rate in ((0.0, 0.0), (0.05, 0.0), (0.05, 0.01)):
        cal = Calibrator(window=2000, rate=rate, level_rate=level_rate)
        cal.update(rng.lognormal(np.log(100), 0.5, 2000), np.tile(raw[0], (2000, 1)),
                   adapt=False)
        hits = []
        for _ in range(10):  # 2,000 drifted requests, observed in chunks of 200
            y = 3 * rng.lognormal(np.log(100), 0.5, 200)
            hits.append(np.mean(y <= cal.apply(raw)[:, 1]))
            cal.update(y, raw)
        cover[rate, level_rate] = float(np.mean(hits))
        after[rate, level_rate] = float(np.mean(hits[1:]))
        again = Calibrator.from_state(json.loads(json.dumps(cal.state())))
        np.testing.assert_allclose(again.factors, cal.factors)
        assert again.scale == pytest.approx(cal.scale)
    # measured 0.69 / 0.80 (all chunks); after the first chunk 0.91 with the level, 0.74 without
    assert cover[0.0, 0.0] < 0.75 and cover[0.05, 0.0] > cover[0.0, 0.0] + 0.08
    assert after[0.05, 0.01] >= 0.87 > after[0.0, 0.0]
    assert cal.scale == pytest.approx(3.0, rel=0.1)
    # one large update adapts like the same requests observed 50 at a time
    y, many = 3 * rng.lognormal(np.log(100), 0.5, 1000), np.tile(raw[0], (1000, 1))
    whole, parts = Calibrator(), Calibrator()
    whole.update(y, many)
    for s in range(0, 1000, 50):
        parts.update(y[s:s + 50], many[s:s + 50])
    assert whole.levels == parts.levels and abs(whole.levels[1] - 0.9) > 0.01  # it moved
    assert whole.scale == pytest.approx(parts.scale)
    np.testing.assert_allclose(whole.factors, parts.factors)


def test_online_evaluation_feeds_only_finished_requests(azure, fitted):
    """Requests that arrive together are all scored before any finishes: nothing is fed back
    and the online metrics equal the static ones; 1000 s apart, every chunk sees all earlier
    rows (the last chunk's rows are never fed)."""
    from servecast.predictors.output_length.calibration import Calibrator

    rows = azure[1][:600]
    together = rows.with_columns(arrival_s=pl.lit(rows["arrival_s"][0]))
    apart = rows.with_columns(arrival_s=pl.Series(np.arange(600) * 1000.0))
    keys = ["mae_p50", "kendall_tau", "coverage_p90", "coverage_p99"]
    for frame, fed in ((together, 0), (apart, 400)):
        model = OutputLengthPredictor.load(fitted[1])
        model.calibrator = Calibrator(window=2000)
        static = model.evaluate(frame)
        online = online_evaluate(model, frame, chunk=200)
        assert online["fed_rows"] == fed
        assert len(model.calibrator.residuals[1]) == 0  # the replay ran on a copy
        if not fed:
            assert [online[k] for k in keys] == [static[k] for k in keys]


def test_bad_inputs_raise_clear_errors(fitted, llm_store, tmp_path):
    model, path = fitted
    with pytest.raises(InvalidInputError, match="empty frame"):
        model.predict(pl.DataFrame({"prompt_tokens": []}, schema={"prompt_tokens": pl.Int64}))
    with pytest.raises(InvalidInputError, match="row 1: prompt_tokens"):
        model.predict({"prompt_tokens": [10, -3]})
    with pytest.raises(InvalidInputError, match="row 0"):
        model.predict({"prompt_tokens": [float("nan")]})
    with pytest.raises(InvalidInputError, match="row 1"):
        model.predict({"prompt_tokens": [5, None]})
    with pytest.raises(InvalidInputError, match="missing column 'prompt_tokens'"):
        model.predict({"tokens": [5]})
    with pytest.raises(UnknownNameError, match="trained without"):
        model.predict({"prompt_tokens": [5], "model": ["GPT-4"]})
    burst = load_requests(llm_store, "burstgpt_head54")
    small = create("prompt_bins", bins=2).fit(burst)
    with pytest.raises(UnknownNameError, match="unknown model 'Llama'.*ChatGPT"):
        small.predict({"prompt_tokens": [5], "model": ["Llama"]})
    card = json.loads((path / "model_card.json").read_text())
    other = tmp_path / "old"
    other.mkdir()
    for f in path.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "model_card.json").write_text(json.dumps({**card, "format": 0}))
    with pytest.raises(ModelVersionError, match="retrain"):
        OutputLengthPredictor.load(other)
    with pytest.raises(ModelVersionError, match="retrain"):
        Runtime.load(other)
    # a dir of the previous output-length format (state without "format", no history)
    (other / "model_card.json").write_text(json.dumps(card))
    state = json.loads((path / "state.json").read_text())
    (other / "state.json").write_text(json.dumps({k: v for k, v in state.items()
                                                  if k != "format"}))
    with pytest.raises(ModelVersionError, match="format 1.*retrain"):
        OutputLengthPredictor.load(other)
    with pytest.raises(ModelVersionError, match="format 1.*retrain"):
        Runtime.load(other)


def test_prefix_features_known_answer():
    df = pl.DataFrame({
        "prompt_tokens": [1000, 1500, 700],
        "output_tokens": [40, 90, 10],
        "prefix_hashes": [[1, 2, 3], [1, 2, 3, 4], [9]],
    })
    enc = Encoder.fit(df)
    assert enc.use_prefix
    X = enc.transform(df, learn=True)
    col = {c: j for j, c in enumerate(enc.columns)}
    assert X[:, col["prefix_b"]].tolist() == [0, log_bucket(3), 0]
    assert X[:, col["prefix_out_b"]].tolist() == [0, log_bucket(40), 0]
    # with arrivals, the first request (finished at 0 + 0.5 + 0.03 * 40 = 1.7 s) is seen by
    # the second only if that arrives later
    for t1, seen in ((1.0, 0), (2.0, log_bucket(3))):
        timed = df.with_columns(arrival_s=pl.Series([0.0, t1, 3.0]))
        enc = Encoder.fit(timed)
        assert enc.transform(timed)[:, col["prefix_b"]].tolist() == [0, seen, 0]


def test_session_features_known_answer():
    df = pl.DataFrame({"session_id": ["a", "b", "a", "a"], "turn": [1, 1, 2, 3],
                       "prompt_tokens": [10, 20, 50, 30], "output_tokens": [100, 5, 7, 9]})
    X = Encoder.fit(df).transform(df)
    enc = Encoder.fit(df)
    col = {c: j for j, c in enumerate(enc.columns)}
    assert X[:, col["turn_b"]].tolist() == [1, 1, 2, 3]
    assert X[:, col["prev_out_b"]].tolist() == [0, 0, log_bucket(100), log_bucket(7)]
    assert X[:, col["growth_b"]].tolist() == [0, 0, 1 + log_bucket(40), 1]


def test_sliding_window_is_prequential():
    y = np.arange(1, 201, dtype=float)
    df = pl.DataFrame({"prompt_tokens": np.ones(200, int), "output_tokens": y})
    model = create("sliding_window", history=10).fit(df[:100])
    pred = model.predict(df[100:])
    # row i of the test part sees the 10 outputs before it
    assert pred["p50"][0] == pytest.approx(np.quantile(y[90:100], 0.5))
    assert pred["p50"][5] == pytest.approx(np.quantile(y[95:105], 0.5))


def test_sliding_window_sees_only_finished_requests():
    train = pl.DataFrame({"prompt_tokens": np.ones(20, int), "output_tokens": np.full(20, 10.0)})
    model = create("sliding_window", history=5).fit(train)
    test = pl.DataFrame({"prompt_tokens": [1, 1, 1], "output_tokens": [1000.0, 16.0, 10.0],
                         "arrival_s": [0.0, 1.0, 2.0]})
    # row 0 finishes at 0 + 0.5 + 0.03 x 1000 = 30.5 s: unseen by rows 1 and 2; row 1 at
    # 1.98 s: seen by row 2 (window: four training outputs of 10 and 16)
    assert model.predict(test)["mean"].to_list() == pytest.approx([10.0, 10.0, 11.2])


def test_mooncake_prefix_model_runs(llm_store):
    df = load_requests(llm_store, "mooncake_conversation")
    train, test, _ = split(df)
    model = create("metadata", **SMALL).fit(train)
    assert "prefix_b" in model.encoder.columns
    m = model.evaluate(test)
    base = create("prompt_bins").fit(train).evaluate(test)
    assert m["mae_p50"] < base["mae_p50"]


def test_heads_fall_back_to_the_segment_baseline_without_signal(tmp_path):
    # output independent of the prompt: every head should pick the per-segment model on
    # the held-out calibration rows (no worse than the segment median); with a strong
    # prompt effect the full feature set wins
    rng = np.random.default_rng(0)
    n = 3000
    prompt = rng.integers(10, 4000, n)
    base = {"arrival_s": np.arange(n, dtype=float), "prompt_tokens": prompt,
            "model": rng.choice(["a", "b"], n)}
    noise = pl.DataFrame({**base, "output_tokens": rng.integers(1, 200, n)})
    m = create("metadata", n_estimators=40, learning_rate=0.1).fit(noise)
    assert m.segment_heads[0] is True
    m.save(tmp_path / "m")
    assert OutputLengthPredictor.load(tmp_path / "m").segment_heads == m.segment_heads
    signal = pl.DataFrame({**base, "output_tokens": prompt // 10 + rng.integers(0, 5, n)})
    m = create("metadata", n_estimators=40, learning_rate=0.1).fit(signal)
    assert m.segment_heads[:3] == [False, False, False]


@pytest.mark.parametrize("learn", [True, False])
@pytest.mark.parametrize("arrivals", [False, True])
def test_prefix_codes_vectorized_match_the_loop(learn, arrivals):
    """The vectorized prefix features equal the event-by-event reference, and so does the
    learned prefix index (shared prefixes, empty / null lists, missing outputs, large and
    negative block ids, a prefix index learned before the frame; rows in order, or with
    arrivals: outputs seen once finished)."""
    rng = np.random.default_rng(7)
    roots = [rng.integers(-2**62, 2**62, size=int(rng.integers(1, 12))).tolist()
             for _ in range(30)]
    rows, outs = [], []
    for i in range(600):
        u = rng.random()
        if u < 0.05:
            rows.append(None if i % 2 else [])
        else:
            base = roots[int(rng.integers(len(roots)))]
            cut = int(rng.integers(1, len(base) + 1))
            rows.append(base[:cut] + rng.integers(0, 50, size=int(rng.integers(0, 4))).tolist())
        outs.append(None if rng.random() < 0.1 else int(rng.integers(0, 5000)))
    df = pl.DataFrame({"prompt_tokens": [100] * len(rows), "output_tokens": outs,
                       "prefix_hashes": rows},
                      schema_overrides={"prefix_hashes": pl.List(pl.Int64)})
    if arrivals:  # ~2 s apart, outputs finish 0.5-150 s later: many not yet seen
        df = df.with_columns(arrival_s=np.cumsum(rng.exponential(2.0, df.height)))
    fit = Encoder.fit(df)
    fit.transform(df[:200], learn=True)  # an index from earlier requests
    a, b = Encoder.from_state(fit.state()), Encoder.from_state(fit.state())
    a.prefix_index, b.prefix_index = dict(fit.prefix_index), dict(fit.prefix_index)
    for part in (df[200:], df[200:].drop("output_tokens")):
        got = a._prefix_codes(part, learn)
        want = b._prefix_codes_loop(part, learn)
        for c in ("prefix_b", "prefix_out_b"):
            assert np.array_equal(got[c], want[c]), c
        assert a.prefix_index == b.prefix_index
    assert (got["prefix_b"] > 0).mean() > 0.3  # the test exercises matches


def test_history_features_known_answer():
    """Outputs count once finished: finish_s = arrival + 0.5 s + 0.03 s/token gives 3.5, 4.71,
    7.0, 10.77 s for the first four rows, so the last row (10.2 s) does not see row 3 yet."""
    df = pl.DataFrame({"arrival_s": [0.0, 4.0, 5.0, 10.0, 10.2],
                       "prompt_tokens": [10, 10, 20, 10, 10],
                       "output_tokens": [100, 7, 50, 9, 5]})
    enc = Encoder.fit(df)
    X = enc.transform(df)
    col = {c: j for j, c in enumerate(enc.columns)}

    def got(name):
        return X[:, col[name]].tolist()

    lb = log_bucket
    assert got("same_last_b") == [0, lb(100), 0, lb(7), lb(7)]
    assert got("same_last2_b") == [0, 0, 0, lb(100), lb(100)]
    assert got("same_n_b") == [lb(0), lb(1), lb(0), lb(2), lb(2)]
    assert got("same_mean_b") == [0, lb(100), 0, lb(53.5), lb(53.5)]
    assert got("same_gap_b") == [0, lb(4.0), 0, lb(6.0), lb(6.2)]
    # 10 // 16 = 0, 20 // 16 = 1: prompt 20 has no similar-length history
    assert got("near_last_b") == [0, lb(100), 0, lb(7), lb(7)]
    assert got("near_med_b") == [0, lb(100), 0, lb(53.5), lb(53.5)]
    assert got("recent_med_b") == [0] * 5  # fewer than RECENT_MIN outputs so far


@pytest.mark.parametrize("learn", [True, False])
@pytest.mark.parametrize("arrivals", ["some unknown", "all known"])
def test_history_vectorized_matches_sequential(learn, arrivals):
    """history_codes over a frame equals LengthHistory.codes / observe one event at a time
    (repeated lengths, unobserved rows, a history learned before the frame), and so does the
    learned state. With an unknown arrival each row sees the earlier rows; with all arrivals
    known a row sees the outputs that finished (finish_s) before it arrived."""
    from servecast.predictors.output_length.history import (
        HISTORY,
        LengthHistory,
        finish_s,
        history_codes,
    )

    rng = np.random.default_rng(3)
    n = 3000
    prompt = rng.choice(rng.integers(0, 400, 60), n).astype(float)
    out = rng.integers(0, 3000, n).astype(float)
    out[rng.random(n) < 0.1] = np.nan
    t = np.cumsum(rng.exponential(2.0, n))
    if arrivals == "some unknown":
        t[rng.random(n) < 0.05] = np.nan
    before = LengthHistory()
    for i in range(400):
        before.observe(prompt[i], out[i] if out[i] == out[i] else 5.0, t[i])
    a, b = before.copy(), before.copy()
    got = history_codes(prompt[400:], out[400:], t[400:], a, learn)
    # events: (time, 0 = a finish is observed / 1 = an arrival asks, row)
    rows = range(400, n)
    if arrivals == "some unknown":  # row order: a row is observed right after it asks
        events = [(i, k, i) for i in rows for k in (1, 0)]
    else:
        done = finish_s(t, out)
        events = sorted([(t[i], 1, i) for i in rows] +
                        [(done[i], 0, i) for i in rows if out[i] == out[i]])
    want = {}
    for _, asks, i in events:
        if asks:
            want[i] = b.codes(prompt[i], None if t[i] != t[i] else t[i])
        elif out[i] == out[i]:  # later rows of the frame see it, learned or not
            b.observe(prompt[i], out[i], None if t[i] != t[i] else t[i])
    want = np.array([want[i] for i in rows])
    for j, name in enumerate(HISTORY):
        assert np.array_equal(got[name], want[:, j]), name
    sa, sb = a.arrays(), (b if learn else before).arrays()
    for k in sa:
        assert np.array_equal(sa[k], sb[k], equal_nan=True), k
    assert (got["same_last_b"] > 0).mean() > 0.5 and (got["same_gap_b"] > 0).mean() > 0.3


def test_runtime_matches_predict_on_a_sequence(azure, fitted):
    """A scheduler calling output_length(arrival_s=...) when a request arrives and
    observe(...) when it finishes gets exactly what predict gives on the same rows (each row
    sees the outputs that finished, by history.finish_s, before it arrived), the online
    calibration frozen."""
    from servecast.predictors.output_length.history import finish_s

    _, test, _ = azure
    model, path = fitted
    assert "same_last_b" in model.encoder.columns
    rows = test[:400]
    want = model.predict(rows).to_numpy()
    rt = Runtime.load(path)
    assert rt.forest is not None
    rt.online.frozen = True  # the calibration as fitted, like `predict`
    t, p, y = (rows[c].to_numpy() for c in ("arrival_s", "prompt_tokens", "output_tokens"))
    done = finish_s(t, y)
    got = {}
    for _, asks, i in sorted([(t[i], 1, i) for i in range(len(t))] +
                             [(done[i], 0, i) for i in range(len(t))]):
        if asks:
            got[i] = rt.output_length(p[i], arrival_s=t[i])
        else:
            rt.observe(None, p[i], y[i], arrival_s=t[i])
    assert np.allclose(np.array([got[i] for i in range(len(t))]), want, rtol=1e-9, atol=1e-9)
    # the history moved the estimates (the features are live, not constant)
    fresh = Runtime.load(path)
    alone = [fresh.output_length(r["prompt_tokens"]) for r in rows.iter_rows(named=True)]
    assert not np.allclose(np.array(alone), want)


def test_forest_equals_lightgbm(fitted):
    from servecast.predictors.output_length.forest import Forest

    model, path = fitted
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 6000, 2000)] +
                        [rng.integers(0, 16, 2000) for _ in model.encoder.columns[1:]])
    X = X.astype(np.float64)
    forest = Forest.load(path)
    want = model._raw_X(X)
    assert np.allclose(forest.predict(X), want, rtol=1e-12, atol=1e-9)
    assert np.allclose(forest.predict_row(X[7].tolist()), want[7], rtol=1e-12, atol=1e-9)
