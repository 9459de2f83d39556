"""The learned residual of the operator-latency model on aiconfigurator's real vLLM tables:
per-op settings (`predictor.RESIDUALS`: raw shape features, the shape view averaged in),
what the saved model and the numpy runtime carry, the shape-lookup diagnostic of the inner
leave-one-GPU-out and its command-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from servecast.errors import ModelVersionError
from servecast.predictors.kernel_latency.runtime import standardize
from servecast.predictors.operator_latency import predictor
from servecast.predictors.operator_latency.data import KEY, operator_frame
from servecast.predictors.operator_latency.predictor import OperatorLatencyModel
from servecast.predictors.operator_latency.runtime import (
    CROSS_COLUMNS,
    GEMM_CROSS_COLUMNS,
    SHAPE_COLUMNS,
    Runtime,
    load_parts,
    residual_features,
)
from servecast.store import Store

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SHAPE_KEY = [k for k in KEY if k != "device"]


@pytest.fixture(scope="module")
def frame(tmp_path_factory, data):
    """Attention and GEMM rows of 150 shapes per op and dtype that every one of their GPUs
    measured (so the shape view and the lookup have the same shapes on every GPU)."""
    with Store(tmp_path_factory.mktemp("ops") / "ops.duckdb") as store:
        store.ingest("aiconfigurator", [data / "gpu/aiconfigurator"], trace="aiconfigurator")
        full = operator_frame(store).filter(pl.col("op") != "allreduce")
    gpus = full.group_by("op", "dtype").agg(gpus=pl.col("device").n_unique())
    shared = (full.group_by(SHAPE_KEY).agg(n=pl.col("device").n_unique())
              .join(gpus, on=["op", "dtype"]).filter(pl.col("n") == pl.col("gpus")))
    picked = pl.concat([part.sample(150, seed=0) for _k, part in
                        shared.sort(SHAPE_KEY).group_by("op", "dtype", maintain_order=True)])
    return full.join(picked.select(SHAPE_KEY), on=SHAPE_KEY).sort(KEY)


@pytest.fixture(scope="module")
def fitted(frame, tmp_path_factory):
    """The model with the shipped RESIDUALS fitted on every GPU but the L40S, saved."""
    model = OperatorLatencyModel(trees=40).fit(frame.filter(pl.col("device") != "l40s"))
    path = tmp_path_factory.mktemp("models") / "ops"
    model.save(path)
    return model, path


@pytest.mark.slow
def test_shipped_residual_settings_reach_the_fit_the_save_and_the_runtime(frame, fitted):
    """Every RESIDUALS setting is what the fitted model, its saved files and the numpy
    runtime use; the runtime's predictions (batch and single call) are the model's. A key
    whose shape view takes all the weight fits and saves no view forest."""
    model, path = fitted
    for key, cfg in predictor.RESIDUALS.items():
        res = model.forests[key]
        assert res.shape_weight == cfg.get("shape_weight", 0.0)
        whole = cfg.get("shape_weight") == 1.0
        assert (res.forest is None) == whole == (not (path / key).exists())
        assert (load_parts(path).forests[key].forest is None) == whole
        assert res.scale == cfg.get("scale", 1.0) == model.card["residuals"][key]["scale"]
        assert (res.shape is not None) == bool(cfg.get("shape_weight"))
        assert set(SHAPE_COLUMNS) <= set(res.columns) if cfg.get("shape_features") else \
            not set(SHAPE_COLUMNS) & set(res.columns)
        assert (path / "shape" / key).is_dir() == bool(cfg.get("shape_weight"))
        assert (res.mlp.weight if res.mlp else 0.0) == cfg.get("mlp_weight", 0.0)
        assert (path / "mlp" / key).is_dir() == bool(cfg.get("mlp_weight"))
        if res.mlp:
            assert set(res.shape_columns) <= set(res.mlp.columns) if cfg.get("mlp_shape") \
                else res.mlp.columns == res.columns
        assert res.shape_columns == SHAPE_COLUMNS + (
            CROSS_COLUMNS if cfg.get("shape_cross") else []) + (
            GEMM_CROSS_COLUMNS if cfg.get("gemm_cross") else [])
    test = frame.filter(pl.col("device") == "l40s")
    want = model.predict(test)["latency_ms_pred"].to_numpy()
    rt = Runtime.load(path)
    assert rt.predict(test.to_dict(as_series=False))["latency_ms_pred"] == pytest.approx(
        want, rel=1e-12)
    assert OperatorLatencyModel.load(path).predict(test)["latency_ms_pred"].to_numpy() == \
        pytest.approx(want, rel=1e-12)
    # a single call is a serving call (weights from DRAM): the batch rows with warm_l2 = 0
    serving = model.predict(test.with_columns(warm_l2=pl.lit(0.0)))["latency_ms_pred"]
    for i in (0, test.height // 2, test.height - 1, *np.flatnonzero(test["warm_l2"] > 0)[:3]):
        row = test.row(int(i), named=True)
        shape = {c: row[c] for c in ("M", "N", "K", "B", "H", "kv_heads", "head_dim")}
        one = rt.operator_latency(row["op"], "l40s", row["dtype"], row["kv_dtype"], **shape)
        assert one == pytest.approx(serving[int(i)], rel=1e-9)


@pytest.mark.slow
def test_the_shape_view_reads_no_device_feature(frame, monkeypatch):
    """A residual that is the shape view alone (weight 1) gives every GPU the same
    measured / physics ratio at one shape, whatever its spec; the relative view does not."""
    part = frame.filter(pl.col("op") == "attn_prefill")
    ratio = (pl.col("latency_ms_pred") / pl.col("physics_ms")).log()

    def spread(weight: float) -> float:
        monkeypatch.setitem(predictor.RESIDUALS, "attn_prefill", {"shape_weight": weight})
        out = OperatorLatencyModel(trees=20).fit(part).predict(part)
        return float(out.group_by(SHAPE_KEY).agg(s=ratio.max() - ratio.min())["s"].max())

    assert spread(1.0) == pytest.approx(0.0, abs=1e-12)
    assert spread(0.0) > 0.01


@pytest.mark.slow
def test_a_fine_shape_view_on_the_shape_products_learns_each_shape(frame, monkeypatch):
    """On decode rows whose log(measured / physics) is a function of the KV elements a
    sequence batch reads (B x kv_heads x context x head_dim), the same on every GPU, the
    shape view with `shape_cross` and `shape_fine` recovers it within 2% on 90% of the rows
    it was fitted on, where the default shape view (raw shape, coarse L1 leaves) misses by
    more than 3x as much."""
    part = frame.filter(pl.col("op") == "attn_decode")
    physics_ms = OperatorLatencyModel().physics(part)[0]
    kv = np.log1p(part.select(pl.col("B") * pl.col("kv_heads") * (pl.col("N") + pl.col("M"))
                              * pl.col("head_dim")).to_series().to_numpy())
    made = 0.4 * np.sin(kv / 2.0)
    part = part.with_columns(latency_ms=pl.Series(physics_ms * np.exp(made)))

    def worst(**cfg) -> float:
        monkeypatch.setitem(predictor.RESIDUALS, "attn_decode", {"shape_weight": 1.0} | cfg)
        out = OperatorLatencyModel(trees=80).fit(part).predict(part)
        ratio = (out["latency_ms_pred"] / out["latency_ms"]).to_numpy()
        return float(np.percentile(np.abs(np.log(ratio)), 90))

    fine = worst(shape_cross=True, shape_fine=True)
    assert fine < 0.02
    assert worst() > 3.0 * fine


@pytest.mark.slow
def test_a_model_saved_before_per_op_residuals_loads_on_the_view_columns(fitted, tmp_path):
    """An `operator_latency.json` without `residuals` (an older model) loads with every
    op on the saved columns and no shape view; a bad shape weight is refused naming the
    file and the key."""
    import shutil

    _model, path = fitted
    old = tmp_path / "old"
    shutil.copytree(path, old)
    meta = json.loads((old / "operator_latency.json").read_text())
    # an older model had a view forest for every op (not so a shape view alone)
    legacy = {k: v for k, v in meta.items() if k != "residuals"} | {
        "ops": [op for op in meta["ops"] if (old / op).is_dir()]}
    (old / "operator_latency.json").write_text(json.dumps(legacy))
    rt = load_parts(old)
    for res in rt.forests.values():
        assert res.columns == meta["columns"] and res.shape is None
    # residuals saved before `shape_columns`: the shape view reads the raw shape alone
    for cfg in meta["residuals"].values():
        cfg.pop("shape_columns")
    (old / "operator_latency.json").write_text(json.dumps(meta))
    assert {tuple(r.shape_columns) for r in load_parts(old).forests.values()} == {
        tuple(SHAPE_COLUMNS)}
    meta["residuals"]["attn_decode"]["shape_columns"] = "all"
    (old / "operator_latency.json").write_text(json.dumps(meta))
    with pytest.raises(ModelVersionError, match=r"residuals.attn_decode.shape_columns"):
        load_parts(old)
    meta["residuals"]["attn_decode"]["shape_columns"] = SHAPE_COLUMNS
    meta["residuals"]["attn_decode"]["shape_weight"] = 1.5
    (old / "operator_latency.json").write_text(json.dumps(meta))
    with pytest.raises(ModelVersionError, match=r"operator_latency.json.*attn_decode"):
        load_parts(old)
    meta["residuals"]["attn_decode"]["shape_weight"] = "half"
    (old / "operator_latency.json").write_text(json.dumps(meta))
    with pytest.raises(ModelVersionError, match=r"residuals.attn_decode.shape_weight"):
        load_parts(old)


@pytest.mark.slow
def test_an_mlp_member_blends_in_saves_and_predicts_the_same_through_the_runtime(
        frame, monkeypatch, tmp_path):
    """`mlp_weight` w: the residual is (1 - w) x the forests' + w x an MLP of `mlp_hidden`
    units on the forest's columns (the other keys keep no MLP), reading them clipped to
    their training range (`mlp_clip`); its epoch is chosen on the fit rows; the saved
    model, loaded by the numpy runtime or the predictor, predicts what the fitted one
    does."""
    part = frame.filter(pl.col("op").is_in(["attn_decode", "attn_prefill"]))
    fit, test = part.filter(pl.col("device") != "l40s"), part.filter(pl.col("device") == "l40s")
    decode = test.filter(pl.col("op") == "attn_decode")
    monkeypatch.setitem(predictor.RESIDUALS, "attn_prefill", {
        k: v for k, v in predictor.RESIDUALS["attn_prefill"].items() if "mlp" not in k})
    monkeypatch.setitem(predictor.RESIDUALS, "attn_decode",
                        predictor.RESIDUALS["attn_decode"] | {"scale": 1.0})
    base = OperatorLatencyModel(trees=10).fit(fit)
    monkeypatch.setitem(predictor.RESIDUALS, "attn_decode",
                        predictor.RESIDUALS["attn_decode"] | {"mlp_weight": 0.25,
                                                              "mlp_hidden": 16,
                                                              "mlp_clip": True})
    monkeypatch.setitem(predictor.MLP, "epochs", 3)
    model = OperatorLatencyModel(trees=10).fit(fit)
    res = model.forests["attn_decode"]
    assert model.forests["attn_prefill"].mlp is None and list(model.card["mlp"]) == [
        "attn_decode"]
    assert 1 <= model.card["mlp"]["attn_decode"]["epoch"] <= 3
    assert res.mlp.columns == res.columns and res.mlp.weights[0].shape == (
        len(res.columns), 16)

    def log_ratio(m: OperatorLatencyModel) -> np.ndarray:
        out = m.predict(decode)
        return np.log((out["latency_ms_pred"] / out["physics_ms"]).to_numpy())

    X = model.physics(decode)[2]
    lo, hi = res.mlp.bounds
    z = standardize(X[:, res.columns], res.mlp.mean, res.mlp.std)
    assert ((z < lo) | (z > hi)).any()  # the L40S lies outside the fit GPUs' range
    mlp = res.mlp.predict(X)
    assert mlp == pytest.approx(res.mlp.net(np.clip(z, lo, hi)), abs=1e-12)
    assert np.abs(mlp - log_ratio(base)).max() > 1e-3
    assert log_ratio(model) == pytest.approx(0.75 * log_ratio(base) + 0.25 * mlp, abs=1e-9)
    path = tmp_path / "ops"
    model.save(path)
    assert (path / "mlp" / "attn_decode" / "mlp.npz").is_file()
    assert not (path / "mlp" / "attn_prefill").exists()
    want = model.predict(test)["latency_ms_pred"].to_numpy()
    assert Runtime.load(path).predict(test.to_dict(as_series=False))["latency_ms_pred"] == \
        pytest.approx(want, rel=1e-12)
    assert OperatorLatencyModel.load(path).predict(test)["latency_ms_pred"].to_numpy() == \
        pytest.approx(want, rel=1e-12)


@pytest.mark.slow
def test_a_residual_scale_shrinks_the_log_residual_and_the_saved_model_keeps_it(
        frame, monkeypatch, tmp_path):
    """`scale` s multiplies the whole log residual (forests, shape view and MLP member):
    log(predicted / physics) is s x the unscaled model's, row by row; the saved model, read
    by the numpy runtime, predicts the same; a model saved without `scale` loads unshrunk
    and a scale outside [0, 1] is refused naming the file and the key."""
    part = frame.filter(pl.col("op").is_in(["attn_decode", "attn_prefill"]))
    fit, test = part.filter(pl.col("device") != "l40s"), part.filter(pl.col("device") == "l40s")
    monkeypatch.setitem(predictor.MLP, "epochs", 2)

    def log_ratio(m: OperatorLatencyModel) -> np.ndarray:
        out = m.predict(test)
        return np.log((out["latency_ms_pred"] / out["physics_ms"]).to_numpy())

    for key in ("attn_decode", "attn_prefill"):
        monkeypatch.setitem(predictor.RESIDUALS, key, predictor.RESIDUALS[key] | {"scale": 0.8})
    model = OperatorLatencyModel(trees=10).fit(fit)
    assert model.card["residuals"]["attn_prefill"]["scale"] == 0.8
    assert model.forests["attn_prefill"].mlp is not None
    shrunk = log_ratio(model)
    for res in model.forests.values():
        res.scale = 1.0
    whole = log_ratio(model)
    assert np.abs(whole).max() > 0.05
    assert shrunk == pytest.approx(0.8 * whole, abs=1e-9)
    for res in model.forests.values():
        res.scale = 0.8
    path = tmp_path / "ops"
    model.save(path)
    want = model.predict(test)["latency_ms_pred"].to_numpy()
    assert Runtime.load(path).predict(test.to_dict(as_series=False))["latency_ms_pred"] == \
        pytest.approx(want, rel=1e-12)
    meta = json.loads((path / "operator_latency.json").read_text())
    meta["residuals"]["attn_decode"].pop("scale")
    (path / "operator_latency.json").write_text(json.dumps(meta))
    assert load_parts(path).forests["attn_decode"].scale == 1.0
    meta["residuals"]["attn_decode"]["scale"] = 1.5
    (path / "operator_latency.json").write_text(json.dumps(meta))
    with pytest.raises(ModelVersionError, match=r"operator_latency.json.*attn_decode.scale"):
        load_parts(path)


@pytest.mark.slow
def test_lookup_diagnostic_is_exact_when_the_residual_is_the_shapes_alone(frame):
    """The inner loop's shape lookup: on rows whose log(measured / physics) is a function
    of the shape alone (the same on every GPU), every scored row is matched and the lookup
    is exact, where the trees are not; the trees' own score equals the inner loop's."""
    sys.path.insert(0, str(BENCH))
    from _inner_logo import fit_score, lookup_scores, nested_folds

    part = frame.filter(pl.col("op") == "attn_decode")
    physics_ms = OperatorLatencyModel().physics(part)[0]
    made = np.log1p(part["B"].to_numpy()) * 0.3 - np.log1p(part["N"].to_numpy()) * 0.1
    part = part.with_columns(latency_ms=pl.Series(physics_ms * np.exp(made)))
    scores = lookup_scores(part, trees=20)
    assert scores["match"].min() == 100.0
    by = scores.group_by("method").agg(pl.col("mdape").max())
    top = dict(by.iter_rows())
    assert top["lookup mean"] < 1e-9 and top["lookup median"] < 1e-9
    assert top["trees"] > 0.1
    outer, inner, fit, test = next(iter(nested_folds(part)))
    first = scores.filter((pl.col("outer") == outer) & (pl.col("inner") == inner)
                          & (pl.col("method") == "trees"))["mdape"][0]
    assert first == pytest.approx(fit_score(fit, test, trees=20)["attn_decode/bf16"], rel=1e-9)


@pytest.mark.parametrize(("script", "args", "says"), [
    ("gemm_inner_logo.py", ["--residual", "gemm/fp8.weight=0.5"], "NAME one of"),
    ("attention_inner_logo.py", ["--residual", "attn_decode.shape_weight=2"], "in [0, 1]"),
    ("attention_inner_logo.py", ["--residual", "attn_decode.shape_weight=x"],
     "'x' is not a number"),
    ("gemm_inner_logo.py", ["--param", "gemm/bf16.leaves=31"], "NAME one of"),
    ("gemm_inner_logo.py", ["--param", "gemm/bf16.num_leaves=0"], "a positive int"),
    ("gemm_inner_logo.py", ["--param", "gemm/bf16.num_leaves=31.5"], "a positive int"),
    ("gemm_inner_logo.py", ["--param", "gemm/bf16.learning_rate=fast"], "is not a number"),
    ("attention_inner_logo.py", ["--param", "attn_decode.num_leaves=7.5"], "a positive int"),
    ("gemm_inner_logo.py", ["--residual", "gemm/bf16.mlp_hidden=0"], "a positive int"),
    ("gemm_inner_logo.py", ["--residual", "gemm/bf16.mlp_hidden=8.5"], "a positive int"),
    ("attention_inner_logo.py", ["--residual", "attn_decode.mlp_weight=1.5"], "in [0, 1]"),
    ("attention_inner_logo.py", ["--residual", "attn_decode.scale=1.2"], "in [0, 1]"),
    ("attention_inner_logo.py", ["--param", "attn_decode.num_leaves=31"], "changes nothing"),
    ("attention_inner_logo.py", ["--param", "attn_decode.objective=huber"], "changes nothing"),
])
def test_inner_loops_refuse_a_bad_residual_setting(script, args, says):
    """A bad `--residual` exits 2 naming the pair and the fix, no traceback, before any
    data is read."""
    run = subprocess.run([sys.executable, str(BENCH / script), "--db", "/nonexistent",
                          *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert says in run.stderr and args[1] in run.stderr
    assert "Traceback" not in run.stderr


def test_one_param_parser_sets_numbers_and_objective_names(monkeypatch):
    """Both inner loops' `--param` (`_inner_logo.forest_params`) put typed LightGBM
    settings under the named residual key of `OP_PARAMS`, an objective as its name."""
    from _inner_logo import forest_params

    from servecast.predictors.operator_latency import predictor

    monkeypatch.setattr(predictor, "OP_PARAMS", {})
    monkeypatch.setitem(predictor.RESIDUALS, "attn_decode", {"shape_weight": 0.75})
    got = forest_params(["attn_decode.objective=l2", "gemm/bf16.num_leaves=31",
                         "gemm/bf16.learning_rate=0.1"])
    assert got == {"attn_decode": {"objective": "l2"},
                   "gemm/bf16": {"num_leaves": 31, "learning_rate": 0.1}}
    assert isinstance(got["gemm/bf16"]["num_leaves"], int)


def test_a_param_no_forest_reads_is_refused_and_one_the_shape_view_reads_is_not(monkeypatch):
    """Under the shipped decode residual (its fine shape view alone) `--param` refuses the
    settings `FINE_SHAPE_PARAMS` override and takes one they leave to `OP_PARAMS`; a view
    forest (shape_weight below 1) reads them all."""
    from _inner_logo import forest_params

    from servecast.predictors.operator_latency import predictor

    monkeypatch.setattr(predictor, "OP_PARAMS", {})
    assert predictor.RESIDUALS["attn_decode"]["shape_weight"] == 1
    for name in predictor.FINE_SHAPE_PARAMS:
        value = "l1" if name == "objective" else "7"
        with pytest.raises(SystemExit) as refused:
            forest_params([f"attn_decode.{name}={value}"])
        assert refused.value.code == 2
    assert forest_params(["attn_decode.feature_fraction=0.5"]) == {
        "attn_decode": {"feature_fraction": 0.5}}
    monkeypatch.setitem(predictor.RESIDUALS, "attn_decode", {"shape_weight": 0.75,
                                                             "shape_fine": True})
    assert forest_params(["attn_decode.num_leaves=7"])["attn_decode"]["num_leaves"] == 7


def test_gemm_cross_columns_are_the_gemm_shape_products():
    """`residual_features`' GEMM columns are log1p of M x N, N x K, M x N x K, the
    128 x 128 output tiles and K / N, row by row."""
    M, N, K = np.array([1.0, 200.0, 4096.0]), np.array([128.0, 129.0, 8192.0]), \
        np.array([4096.0, 64.0, 1024.0])
    X = residual_features(np.zeros((3, predictor.physics.N_FEATURES)), {"M": M, "N": N, "K": K})
    tiles = np.array([1.0 * 1.0, 2.0 * 2.0, 32.0 * 64.0])
    want = np.log1p(np.column_stack([M * N, N * K, M * N * K, tiles, K / N]))
    assert X[:, GEMM_CROSS_COLUMNS] == pytest.approx(want, rel=1e-12)


@pytest.mark.slow
def test_gemm_cross_lets_the_shape_view_carry_a_tile_count_effect_to_new_shapes(
        frame, monkeypatch):
    """On GEMM rows whose log(measured / physics) follows the 128 x 128 output tile count
    (the same on every GPU), a fine shape view with `gemm_cross` predicts shapes it was
    not fitted on at least three times as well (90th percentile of |log ratio|) as without."""
    part = frame.filter((pl.col("op") == "gemm") & (pl.col("dtype") == "bf16"))
    physics_ms = OperatorLatencyModel().physics(part)[0]
    tiles = part.select(((pl.col("M") / 128).ceil() * (pl.col("N") / 128).ceil()).log1p()
                        ).to_series().to_numpy()
    part = part.with_columns(latency_ms=pl.Series(physics_ms * np.exp(0.4 * np.sin(tiles))))
    shapes = part.select(SHAPE_KEY).unique().sort(SHAPE_KEY)
    held = shapes.gather_every(3)
    fit = part.join(held, on=SHAPE_KEY, how="anti")
    test = part.join(held, on=SHAPE_KEY)

    def worst(**cfg) -> float:
        monkeypatch.setitem(predictor.RESIDUALS, "gemm/bf16",
                            {"shape_weight": 1.0, "shape_fine": True} | cfg)
        out = OperatorLatencyModel(trees=80).fit(fit).predict(test)
        ratio = (out["latency_ms_pred"] / out["latency_ms"]).to_numpy()
        return float(np.percentile(np.abs(np.log(ratio)), 90))

    with_products = worst(gemm_cross=True)
    assert 3.0 * with_products < worst()
