"""Operator latency from spec sheets and the step-time model on aiconfigurator's real vLLM
operator tables: physics, the predictor contract, the numpy-only runtime, the memory model,
`servecast estimate step-time`, the Estimator, and the bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from servecast import gpus
from servecast.errors import InvalidInputError, UnknownNameError
from servecast.predictors.metrics import ape_scores
from servecast.predictors.operator_latency import physics
from servecast.predictors.operator_latency.data import operator_frame
from servecast.predictors.operator_latency.predictor import OperatorLatencyModel
from servecast.predictors.step_time import configs
from servecast.predictors.step_time.model import StepTimeModel
from servecast.store import Store

H100 = gpus.catalog_spec("h100-sxm")


@pytest.fixture(scope="module")
def frame(tmp_path_factory, data):
    with Store(tmp_path_factory.mktemp("ops") / "ops.duckdb") as store:
        store.ingest("aiconfigurator", [data / "gpu/aiconfigurator"], trace="aiconfigurator")
        full = operator_frame(store)
    return full.sample(fraction=0.25, seed=0).sort(full.columns[:4])


@pytest.fixture(scope="module")
def saved(frame, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "step_time"
    StepTimeModel(trees=30).fit(frame).save(path)
    return path


@pytest.fixture(scope="module")
def rt(saved):
    from servecast.predictors.step_time.runtime import Runtime

    return Runtime.load(saved)


# -- physics ------------------------------------------------------------------------------
def test_physics_bounds_and_scaling():
    shape = {"M": np.array([1, 4096, 8192]), "N": 8192, "K": 8192}
    t, _X = physics.features("gemm", H100, dtype="bf16", **shape)
    roof = physics.roofline("gemm", H100, dtype="bf16", **shape)
    assert np.all(t >= roof)  # quantization <= 1 and a launch floor only add time
    assert t[2] / t[1] == pytest.approx(2.0, rel=0.05)  # compute-bound: twice the tokens
    fp8, _ = physics.features("gemm", H100, dtype="fp8", **shape)
    assert np.all(fp8[1:] < t[1:])
    # decode attention is memory bound: bytes of the KV cache over the bandwidth
    dec = physics.roofline("attn_decode", H100, B=64, M=1, N=4096, H=32, kv_heads=8,
                           head_dim=128)
    kv_bytes = 64 * 4097 * 2 * 8 * 128 * 2
    assert dec == pytest.approx(kv_bytes / 3350e9 * 1e3, rel=0.01)


def test_floors_follow_the_clock_and_decode_blocks_cost_cycles():
    tiny = {"M": np.array([1]), "N": 128, "K": 128}
    slow = {**H100, "Freq": H100["Freq"] / 2}
    bf16 = physics.features("gemm", H100, dtype="bf16", **tiny)[0][0]
    assert physics.features("gemm", slow, dtype="bf16", **tiny)[0][0] == pytest.approx(
        2 * bf16, rel=0.02)  # a launch-bound kernel takes twice as long at half the clock
    # 2048 decodes of 16 tokens: bound by their thread blocks, not by the 64 MB of KV
    shape = {"B": np.array([2048]), "M": 1, "N": 15, "H": 32, "kv_heads": 8, "head_dim": 128}
    t, X = physics.features("attn_decode", H100, **shape)
    assert t[0] > 3 * physics.roofline("attn_decode", H100, **shape)[0]
    assert X[0, 14] == pytest.approx(np.log(t[0] - physics.floor_ms("attn_decode", H100)) -
                                     np.log(t[0]), abs=0.01)
    wide = physics.features("attn_decode", {**H100, "Num_Sm": 2 * H100["Num_Sm"]}, **shape)[0]
    assert wide[0] < 0.6 * t[0]


def test_attention_tiles_pack_gqa_split_kv_and_walk_the_causal_diagonal():
    # a 16-token chunk of 32 query heads over 8 KV heads: one packed tile per KV head
    short = physics.attn_tiles("attn_prefill", H100, M=16, N=0, B=1, H=32, kv_heads=8)
    assert short["ctas"] == 8 and short["rows"] == 16 * 4
    # 16k tokens of one head: 128 query tiles walk 1 + 2 + ... + 128 KV blocks of 128
    long = physics.attn_tiles("attn_prefill", H100, M=16384, N=0, B=1, H=1, kv_heads=1)
    assert long["ctas"] == 128 and long["walk"] == 128 * 129 / 2 and long["longest"] == 128
    # the last tile's walk bounds the time: twice the SMs do not halve it
    shape = {"M": np.array([16384]), "N": 0, "B": 1, "H": 1, "kv_heads": 1, "head_dim": 128}
    t = physics.features("attn_prefill", H100, **shape)[0][0]
    wide = physics.features("attn_prefill", {**H100, "Num_Sm": 2 * H100["Num_Sm"]}, **shape)
    assert wide[0][0] > 0.9 * t
    # decode: one long sequence is split over the SMs (FlashAttention-2's heuristic takes
    # the fewest splits within 0.85 of the best wave efficiency: 14 of at most 16 on 132
    # SMs), 32 pairs split in 4 (128 blocks, one wave; 5 would spill into a second), a big
    # batch is not split
    one = physics.attn_tiles("attn_decode", H100, M=1, N=65535, B=1, H=8, kv_heads=1)
    assert one["ctas"] == 14 and one["tokens"] == np.ceil(256 / 14) * 256
    four = physics.attn_tiles("attn_decode", H100, M=1, N=65535, B=4, H=64, kv_heads=8)
    assert four["splits"] == 4 and four["ctas"] == 128
    # a sequence of 3 KV blocks splits at most in 3
    short = physics.attn_tiles("attn_decode", H100, M=1, N=700, B=1, H=8, kv_heads=1)
    assert short["splits"] == 3
    many = physics.attn_tiles("attn_decode", H100, M=1, N=65535, B=256, H=64, kv_heads=8)
    assert many["ctas"] == 256 * 8 and many["tokens"] == 65536


def test_softmax_runs_at_the_fp32_rate():
    """Halving the non-tensor FP32 rate slows a long head_dim-64 prefill (more scores per
    matmul FLOP) more than a head_dim-256 one; a spec without it is refused by name."""
    from servecast.predictors.operator_latency.runtime import Runtime

    slow = {**H100, "SingleFLOPs": H100["SingleFLOPs"] / 2}
    ratio = []
    for hd in (64, 256):
        shape = {"M": np.array([8192]), "N": 0, "B": 4, "H": 32, "kv_heads": 8,
                 "head_dim": hd}
        ratio.append(physics.features("attn_prefill", slow, **shape)[0][0]
                     / physics.features("attn_prefill", H100, **shape)[0][0])
    assert ratio[0] > ratio[1] > 1.0
    spec = {k: v for k, v in H100.items() if k != "SingleFLOPs"}
    with pytest.raises(InvalidInputError, match="missing SingleFLOPs, needed for bf16 attn"):
        Runtime({}, []).operator_latency("attn_prefill", spec, M=16, H=8, kv_heads=8)


def test_prefill_re_reads_of_the_kv_bind_where_bandwidth_is_scarce(monkeypatch):
    """A 16k-token prefill of one head walks 128 x 129 / 2 KV blocks: with half of them
    re-read from DRAM, at the H100's own bandwidth the tensor cores bind it, on a spec with
    a quarter of it the re-read KV does (halving the bandwidth again nearly doubles the
    time); with no re-read the KV is read once."""
    shape = {"M": np.array([16384]), "N": 0, "B": 1, "H": 1, "kv_heads": 1, "head_dim": 128}
    starved = {**H100, "Mem_Bw": H100["Mem_Bw"] / 4}
    monkeypatch.setattr(physics, "KV_REREAD", 0.0)
    once = 16384 * 128 * 2 * 2 + 16384 * 128 * 2 * 2  # query / output and K, V once
    assert physics.attention("attn_prefill", starved, **shape)["t_mem"][0] == pytest.approx(
        once / (starved["Mem_Bw"] * 1e9) * 1e3, rel=1e-6)
    monkeypatch.setattr(physics, "KV_REREAD", 0.5)

    def slowdown(spec):  # time at half the spec's bandwidth over the time at its own
        half = {**spec, "Mem_Bw": spec["Mem_Bw"] / 2}
        return (physics.features("attn_prefill", half, **shape)[0][0]
                / physics.features("attn_prefill", spec, **shape)[0][0])

    assert slowdown(H100) < 1.3 and slowdown(starved) > 1.8
    a = physics.attention("attn_prefill", starved, **shape)
    reread = physics.KV_REREAD * 128 * 129 / 2 * 128 * 128 * 2 * 2
    assert a["t_mem"][0] == pytest.approx(reread / (starved["Mem_Bw"] * 1e9) * 1e3, rel=1e-6)


def test_roofline_and_physics_count_the_same_attention_bytes(monkeypatch):
    """One byte count (`physics.attn_bytes`) feeds the roofline, the features and the
    attention physics: a DRAM-bound decode's memory time is those bytes over the bandwidth
    in all three, and an fp8 KV cache halves the KV part of them."""
    monkeypatch.setattr(physics, "KV_REREAD", 0.0)
    bw = H100["Mem_Bw"] * 1e9
    for op, shape in (("attn_decode", {"B": 64, "M": 1, "N": 8191}),
                      ("attn_prefill", {"B": 2, "M": 4096, "N": 0})):
        shape = {**shape, "H": 32, "kv_heads": 8, "head_dim": 128}
        nbytes = physics.attn_bytes(op, kv_bytes=2.0, **shape)
        kv = shape["B"] * (shape["M"] + shape["N"]) * 2 * 8 * 128
        assert physics.attn_bytes(op, kv_bytes=1.0, **shape) == pytest.approx(nbytes - kv)
        assert physics.work(op, H100, **shape)[1] == nbytes
        assert physics.attention(op, H100, **shape)["t_mem"] == pytest.approx(
            nbytes / bw * 1e3)
    dec = {"B": 64, "M": 1, "N": 8191, "H": 32, "kv_heads": 8, "head_dim": 128}
    assert physics.roofline("attn_decode", H100, **dec) == pytest.approx(
        physics.attn_bytes("attn_decode", kv_bytes=2.0, **dec) / bw * 1e3)


def test_a_spec_without_a_clock_is_refused_naming_the_key():
    from servecast.predictors.operator_latency.runtime import Runtime

    spec = {k: v for k, v in H100.items() if k != "Freq"}
    with pytest.raises(InvalidInputError, match="missing Freq, needed for bf16 gemm"):
        Runtime({}, []).operator_latency("gemm", spec, M=16, N=4096, K=4096)


@pytest.mark.slow  # fits the operator residuals once per module
def test_nothing_depends_on_the_gpu_name(saved, frame):
    model = StepTimeModel.load(saved).ops
    rows = frame.filter(pl.col("device") == "l40s").head(200)
    spec = gpus.resolve_spec("l40s")
    a = model.predict(rows)["latency_ms_pred"]
    model.specs["renamed"] = {**spec, "Device": "renamed"}
    b = model.predict(rows.with_columns(device=pl.lit("renamed")))["latency_ms_pred"]
    assert a.to_list() == b.to_list()


# -- operator model contract --------------------------------------------------------------
@pytest.mark.slow  # fits the operator residuals once per module
def test_operator_model_contract(saved, frame):
    with pytest.raises(InvalidInputError, match="not fitted"):
        OperatorLatencyModel().predict(frame.head(3))
    model = StepTimeModel.load(saved).ops
    part = frame.filter(pl.col("device") == "h100_sxm").head(500)
    before = model.predict(part)
    assert before.height == part.height and before["M"].to_list() == part["M"].to_list()
    res = model.evaluate(part)
    assert model.predict(part)["latency_ms_pred"].to_list() == \
        before["latency_ms_pred"].to_list()  # evaluate has no side effects
    assert {k.split("/")[0] for k in res} <= set(physics.OPS)
    card = json.loads((saved / "model_card.json").read_text())
    assert card["kind"] == "step_time" and card["operators"]["devices"]
    with pytest.raises(UnknownNameError, match="unknown GPU 'h300'"):
        model.predict(part.head(1).with_columns(device=pl.lit("h300")))


@pytest.mark.slow
def test_held_out_gpu_beats_roofline_on_attention(frame):
    """Fit on three GPUs, predict the H100's prefill attention from its spec sheet."""
    train = frame.filter(pl.col("device") != "h100_sxm")
    test = frame.filter((pl.col("device") == "h100_sxm") & (pl.col("op") == "attn_prefill"))
    out = OperatorLatencyModel(trees=30).fit(train).predict(test)
    model = ape_scores(out["latency_ms_pred"], out["latency_ms"])["mdape"]
    roof = ape_scores(out["roofline_ms"], out["latency_ms"])["mdape"]
    assert model < 0.5 * roof


@pytest.mark.slow
def test_op_params_change_only_that_ops_residual(frame, monkeypatch):
    """`OP_PARAMS` settings reach the named op's LightGBM fit and no other op's (decode's
    view forest counting: no shape view, which would take its weight)."""
    from servecast.predictors.operator_latency import predictor

    monkeypatch.setitem(predictor.RESIDUALS, "attn_decode", {})
    part = frame.filter(pl.col("op").is_in(["attn_prefill", "attn_decode"]))
    base = OperatorLatencyModel(trees=10).fit(part).predict(part)
    monkeypatch.setitem(predictor.OP_PARAMS, "attn_decode", {"num_leaves": 2})
    stump = OperatorLatencyModel(trees=10).fit(part).predict(part)
    for op, same in (("attn_prefill", True), ("attn_decode", False)):
        a, b = (p.filter(pl.col("op") == op)["latency_ms_pred"].to_list() for p in (base, stump))
        assert (a == b) is same


def test_the_attention_inner_loop_also_scores_the_allreduce(frame):
    """`attention_inner_logo.py --ops allreduce`: every outer fold's three inner GPUs are
    scored on the all-reduce rows alone."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from attention_inner_logo import inner_scores

    scores = inner_scores(frame.filter(pl.col("op") == "allreduce"), trees=5)
    assert set(scores["op"]) == {"allreduce"} and scores.height == 4 * 3
    assert scores["mdape"].is_finite().all()


# -- model configs --------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), [
    ("llama-2-7b", 6_738_415_616), ("llama-3.1-8b", 8_030_261_248),
    ("mixtral-8x7b", 46_702_792_704), ("llama-2-70b", 68_976_648_192)])
def test_shipped_configs_match_published_parameter_counts(name, params):
    # published counts include the norm weights, which the shape model leaves out
    assert configs.load_config(name).params() == pytest.approx(params, rel=2e-3)


def test_hf_config_json_is_read(tmp_path):
    path = tmp_path / "gpt2ish" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"model_type": "gpt2", "n_embd": 768, "n_layer": 12,
                                "n_head": 12, "vocab_size": 50257, "tie_word_embeddings": True}))
    cfg = configs.load_config(path)
    assert (cfg.hidden, cfg.layers, cfg.kv_heads, cfg.intermediate, cfg.gated_mlp) == \
        (768, 12, 12, 3072, False)
    assert configs.load_config("mistralai/Mixtral-8x7B-v0.1").experts_per_token == 2
    path.write_text(json.dumps({"n_embd": 768, "n_layer": 12, "vocab_size": 5}))
    with pytest.raises(InvalidInputError, match="lacks num_attention_heads / n_head"):
        configs.load_config(path)
    with pytest.raises(UnknownNameError, match="unknown model 'llama-9'.*llama-3.1-8b"):
        configs.load_config("llama-9")


# -- runtime ----------------------------------------------------------------------------------
def test_runtime_imports_numpy_only():
    code = ("import sys, servecast.predictors.step_time.runtime as r; "
            "print(sorted(m for m in ('duckdb', 'polars', 'lightgbm', 'torch', "
            "'pytorch_lightning', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # fits the operator residuals once per module
def test_step_time_grows_with_the_batch_and_tp_splits_it(rt):
    e = rt.engine("llama-3.1-8b", "h100-sxm")
    one = e.step_ms(decode=[1024])
    assert one < e.step_ms(decode=[1024] * 256) < e.step_ms(prefill=[2048], decode=[1024] * 256)
    assert e.step_ms(decode=[128] * 16) < e.step_ms(decode=[16384] * 16)
    assert e.step_ms(prefill=[512], prefill_offsets=[8192]) > e.step_ms(prefill=[512])
    # one decode token of an 8B model streams its 16 GB of weights: >= 4.8 ms at 3.35 TB/s
    assert 16.06e9 / 3350e9 * 1e3 < one < 3 * 16.06e9 / 3350e9 * 1e3
    tp2 = rt.engine("llama-3.1-8b", "h100-sxm", tp=2)
    assert tp2.step_ms(prefill=[8192]) < e.step_ms(prefill=[8192])


@pytest.mark.slow  # fits the operator residuals once per module
def test_the_breakdown_sums_to_the_step_and_names_each_part(rt):
    """`breakdown` splits `step_ms` into parts that sum to it; each part grows with what it
    names and is 0 where the batch has none of it; all-reduce is 0 at TP 1 only."""
    e, tp2 = rt.engine("llama-3.1-8b", "h100-sxm"), rt.engine("llama-3.1-8b", "h100-sxm", tp=2)
    batches = [([], None, [1024] * 64), ([2048], None, []), ([512] * 12, [256] * 12, [900]),
               ([2048], [4096], [1024] * 64)]
    for engine in (e, tp2):
        for b in batches:
            parts = engine.breakdown(*b)
            assert set(parts) == {"linear", "allreduce", "lm_head", "attn_prefill",
                                  "attn_decode", "overhead"}
            assert sum(parts.values()) == pytest.approx(engine.step_ms(*b), rel=1e-12)
            assert min(parts.values()) >= 0 and parts["linear"] > 0
            assert (parts["attn_prefill"] > 0) == bool(b[0])
            assert (parts["attn_decode"] > 0) == bool(b[2])
            assert (parts["allreduce"] > 0) == (engine is tp2)
    long = e.breakdown([2048], [16384], [])["attn_prefill"]
    assert long > e.breakdown([2048], None, [])["attn_prefill"]
    assert e.breakdown([], None, [4096] * 64)["attn_decode"] > \
        e.breakdown([], None, [1024] * 64)["attn_decode"]
    with pytest.raises(InvalidInputError, match="empty batch"):
        e.breakdown()


@pytest.mark.slow  # fits the operator residuals once per module
def test_memory_model(rt):
    e = rt.engine("llama-3.1-8b", "h100-sxm")
    mem = e.memory()
    assert mem["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, bf16
    weights = configs.load_config("llama-3.1-8b").params() * 2
    assert mem["kv_capacity_tokens"] == int((80 * 2**30 * 0.9 - weights) // (2 * 32 * 8 * 128 * 2))
    tp4 = rt.engine("llama-3.1-70b", "h100-sxm", tp=4).memory()
    assert tp4["kv_bytes_per_token"] == 2 * 80 * 2 * 128 * 2  # 8 KV heads over 4 GPUs


@pytest.mark.slow  # fits the operator residuals once per module
def test_bad_input_errors(rt):
    with pytest.raises(UnknownNameError, match="known models: .*qwen2-72b"):
        rt.engine("llama-9", "h100-sxm")
    with pytest.raises(UnknownNameError, match="known GPUs: .*mi300x"):
        rt.engine("llama-3.1-8b", "h300")
    with pytest.raises(InvalidInputError, match="tensor parallelism 3 does not divide .*32"):
        rt.engine("llama-3.1-8b", "h100-sxm", tp=3)
    with pytest.raises(InvalidInputError, match="missing FP8FLOPs, needed for fp8"):
        rt.engine("llama-3.1-8b", "a100", dtype="fp8")
    with pytest.raises(InvalidInputError, match="does not fit .*raise TP"):
        rt.engine("llama-2-70b", "l4")
    e = rt.engine("llama-3.1-8b", "l4")
    cap = e.memory()["kv_capacity_tokens"]
    with pytest.raises(InvalidInputError, match=f"over the {cap:,}-token KV capacity"):
        e.step_ms(decode=[cap])
    with pytest.raises(InvalidInputError, match="empty batch"):
        e.step_ms()


@pytest.mark.slow  # fits the operator residuals once per module
def test_predictor_estimator_and_cli_agree(saved, rt):
    from servecast.estimator import Estimator

    model = StepTimeModel.load(saved)
    batch = pl.DataFrame({"model": ["llama-3.1-8b", "qwen2-7b"], "gpu": ["h100-sxm", "l40s"],
                          "tp": [1, 2], "prefill": [[2048], []], "decode": [[1024] * 64, [512]]})
    out = model.predict(batch)
    want = rt.step_time("llama-3.1-8b", "h100-sxm", [2048], None, [1024] * 64)
    assert out["step_ms"][0] == pytest.approx(want)
    assert model.evaluate(out.with_columns(measured_ms=pl.col("step_ms")))["mdape"] == 0
    est = Estimator.load(saved.parent)
    assert est.step_time("llama-3.1-8b", "h100-sxm", [2048], None, [1024] * 64) == \
        pytest.approx(want)
    cli = [sys.executable, "-m", "servecast.cli", "estimate", "step-time", "--models", saved]
    ok = subprocess.run([*cli, "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--prefill",
                         "2048", "--decode", "64x1024", "--json"], capture_output=True,
                        text=True, check=True)
    printed = json.loads(ok.stdout)
    assert printed["step_ms"] == pytest.approx(want)
    assert sum(printed["breakdown"].values()) == pytest.approx(want)
    bad = subprocess.run([*cli, "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--decode",
                          "64y"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--decode" in bad.stderr


@pytest.mark.slow  # fits the operator residuals once per module
def test_http_step_time(saved, rt):
    from fastapi.testclient import TestClient

    from servecast.service.app import create_app

    body = {"model": "llama-3.1-8b", "gpu": "h100-sxm", "prefill": [2048], "decode": [1024] * 64}
    with TestClient(create_app(saved.parent)) as c:
        one = c.post("/v1/step-time", json=body)
        assert one.status_code == 200
        e = rt.engine("llama-3.1-8b", "h100-sxm")
        got = one.json()
        assert got.pop("breakdown") == pytest.approx(e.breakdown([2048], None, [1024] * 64))
        assert got == {"step_ms": pytest.approx(e.step_ms([2048], None, [1024] * 64)),
                       "kv_capacity_tokens": e.kv_capacity_tokens}
        batch = c.post("/v1/step-time", json={"items": [body, {**body, "tp": 2}]}).json()
        assert batch["items"][0] == one.json()
        assert batch["items"][1]["step_ms"] < one.json()["step_ms"]
        bad = c.post("/v1/step-time", json={**body, "tp": 0})
        assert bad.status_code == 422 and bad.json()["message"].startswith("tp:")
        unknown = c.post("/v1/step-time", json={**body, "model": "llama-9"})
        assert unknown.status_code == 422 and "known models" in unknown.json()["message"]


def test_operator_single_call_equals_predict(fitted_kind):
    """Estimator.operator_latency (one call, GPU by name or spec mapping) = predict's row."""
    from servecast.estimator import Estimator
    from servecast.predictors.operator_latency.data import SHAPE

    fx, model, _, path = fitted_kind("operator_latency")
    est = Estimator.load(path.parent)
    want = model.predict(fx.test)["latency_ms_pred"].to_list()
    for i, row in enumerate(fx.test.head(6).iter_rows(named=True)):
        shape = {c: row[c] for c in SHAPE}
        args = (row["op"], row["device"], row["dtype"], row["kv_dtype"])
        assert est.operator_latency(*args, **shape) == pytest.approx(want[i], rel=1e-9)
        spec = gpus.resolve_spec(row["device"])
        assert est.operator_latency(row["op"], spec, row["dtype"], row["kv_dtype"],
                                    **shape) == pytest.approx(want[i], rel=1e-9)
    with pytest.raises(InvalidInputError, match="unknown shape argument.*Q"):
        est.operator_latency("gemm", "h100-sxm", M=1, N=8, K=8, Q=3)
    with pytest.raises(UnknownNameError, match="unknown op 'conv'"):
        est.operator_latency("conv", "h100-sxm", M=1, N=8, K=8)
    with pytest.raises(InvalidInputError, match="FP8FLOPs"):  # no fp8 peak on an A100
        est.operator_latency("gemm", "a100-sxm", "fp8", M=1, N=8, K=8)


def test_saved_engine_overhead_is_added_to_every_step(fitted_kind, tmp_path):
    """`overhead_ms` is saved in the card's params and added by the runtime and the
    Estimator unless a call gives its own; a bad saved value is refused naming the key."""
    import shutil

    from servecast.errors import ModelVersionError
    from servecast.estimator import Estimator
    from servecast.predictors.step_time.runtime import Runtime

    _fx, model, _, path = fitted_kind("step_time")
    card = json.loads((path / "model_card.json").read_text())
    assert card["params"]["overhead_ms"] == model.overhead_ms == 1.5
    rt = Runtime.load(path)
    call = ("llama-3.1-8b", "l40s", [512], None, [1024] * 8)
    bare = rt.step_time(*call, overhead_ms=0.0)
    assert rt.step_time(*call) - bare == pytest.approx(1.5)
    assert Estimator.load(path.parent).step_time(*call) == pytest.approx(bare + 1.5)
    bad = shutil.copytree(path, tmp_path / "step_time")
    card["params"]["overhead_ms"] = -1
    (bad / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelVersionError, match="overhead_ms=-1"):
        Runtime.load(bad)


# -- MoE layer ------------------------------------------------------------------------------
def _moe(rt, spec, dtype, tokens, cv, tp=1):
    from servecast.predictors.step_time.runtime import moe_layer_ms

    cfg = configs.load_config("mixtral-8x7b")
    inter = cfg.intermediate // tp
    return moe_layer_ms(rt, spec, dtype, np.asarray(tokens, dtype=float), cfg.experts,
                        cfg.experts_per_token, cfg.hidden, inter, 2 * inter, cv)


def test_expert_loads_follow_the_binomial_of_the_routing_shares():
    from servecast.predictors.step_time.runtime import expert_loads, expert_shares

    assert np.allclose(expert_shares(8, 0.0), 1 / 8)
    shares = expert_shares(8, 0.3)
    assert shares.sum() == pytest.approx(1.0) and shares.std() / shares.mean() == \
        pytest.approx(0.3)
    assert (np.diff(shares) > 0).all()
    tokens = np.array([1, 3, 40, 256, 257, 5000, 131072])
    loads = expert_loads(tokens, 2 * shares, quantiles=64)
    assert loads.shape == (7, 8, 64)
    assert (loads >= 0).all() and (loads <= tokens[:, None, None]).all()
    # mean count T x k x share (to the quadrature's resolution) on both sides of the exact path
    assert np.allclose(loads.mean(axis=2), tokens[:, None] * 2 * shares,
                       rtol=0.03, atol=1 / 64 * tokens[:, None] ** 0.5 + 0.02)
    # an expert is idle with probability (1 - k share)^T: the fewer tokens, the more idle
    idle = (loads[:2] == 0).mean(axis=2)
    assert np.allclose(idle, (1 - 2 * shares) ** tokens[:2, None], atol=1 / 64)
    assert (loads[4:] > 0).all()


def test_moe_layer_counts_the_router_the_routing_passes_and_each_routed_expert():
    from servecast.predictors.step_time.runtime import Runtime

    rt, dtype = Runtime({}, []), "fp8"
    cfg = configs.load_config("mixtral-8x7b")
    hid, inter = cfg.hidden, cfg.intermediate
    one = _moe(rt, H100, dtype, [1], 0.0)[0]
    expert = (rt.op_ms("gemm", H100, dtype=dtype, M=1.0, N=2 * inter, K=hid)
              + rt.op_ms("gemm", H100, dtype=dtype, M=1.0, N=hid, K=inter))
    side = (rt.op_ms("gemm", H100, dtype="bf16", M=1.0, N=cfg.experts, K=hid)
            + (3 * inter * 2 + 2 * (hid + 2 * hid)) * 2.0 / (H100["Mem_Bw"] * 1e9) * 1e3
            + 4 * physics.LAUNCH_MS)
    # one token: its top-2 experts' GEMMs (m = 1) plus the router, top-k, gather and combine
    assert one == pytest.approx(2 * expert + side, rel=1e-9)
    # the routing passes move T x k x hidden activations: they grow with the tokens
    many = _moe(rt, H100, dtype, [4096, 8192], 0.0)
    assert many[1] > 1.9 * many[0]


def test_routing_imbalance_idles_experts_at_small_batches_and_costs_at_the_knee():
    """Few tokens: skewed routing leaves more experts idle (fewer weights streamed); where an
    expert's tokens cross from memory- to compute-bound, the loaded experts cost more than
    the light ones save (Jensen)."""
    from servecast.predictors.step_time.runtime import TOKENS, Runtime

    rt = Runtime({}, [])
    for spec, dtype, tp in ((H100, "fp8", 1), (gpus.catalog_spec("a100-40gb-sxm"), "bf16", 4)):
        ratio = _moe(rt, spec, dtype, TOKENS, 0.5, tp) / _moe(rt, spec, dtype, TOKENS, 0.0, tp)
        assert ratio[TOKENS == 1] == pytest.approx(1.0)
        assert ratio[(TOKENS >= 4) & (TOKENS <= 16)].max() < 0.97
        assert ratio[(TOKENS >= 256) & (TOKENS <= 2048)].max() > 1.03


def test_moe_terms_leave_dense_models_bit_for_bit():
    from servecast.predictors.step_time.runtime import TOKENS, EngineStep, Runtime

    rt = Runtime({}, [])
    cfg = configs.load_config("llama-3.1-8b")
    plain = EngineStep(rt, cfg, H100, 1, "bf16", 0.0, 0.9)
    skewed = EngineStep(rt, cfg, H100, 1, "bf16", 0.0, 0.9, routing_cv=0.5)
    assert np.array_equal(plain.tables()["log_linear_ms"], skewed.tables()["log_linear_ms"])
    # the dense layer: four GEMMs, the activation passes and 4 launches, nothing else
    hd, h, kvh, hid, inter = cfg.head_dim, cfg.heads, cfg.kv_heads, cfg.hidden, cfg.intermediate
    layer = np.zeros_like(TOKENS)
    for n, k in (((h + 2 * kvh) * hd, hid), (hid, h * hd), (2 * inter, hid), (hid, inter)):
        layer += rt.op_ms("gemm", H100, dtype="bf16", M=TOKENS, N=n, K=k)
    layer += TOKENS * (8.0 * hid + 3.0 * inter) * 2.0 / (H100["Mem_Bw"] * 1e9) * 1e3 \
        + 4 * physics.LAUNCH_MS
    assert np.array_equal(plain.tables()["log_linear_ms"], np.log(cfg.layers * layer))
    mixtral = configs.load_config("mixtral-8x7b")
    with pytest.raises(InvalidInputError, match="routing_cv=-0.1 must be in"):
        EngineStep(rt, mixtral, H100, 1, "bf16", 0.0, 0.9, routing_cv=-0.1)


# -- engine overhead fitted in training ---------------------------------------------------
@pytest.fixture(scope="module")
def serving_store(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("serving") / "serving.duckdb"
    with Store(path) as store:
        store.ingest("aiconfigurator", [data / "gpu/aiconfigurator"], trace="aiconfigurator")
        store.ingest("llm-inference-bench", [data / "serving/llm_inference_bench"],
                     trace="llm_inference_bench")
        store.ingest("splitwise-perf", [data / "serving/splitwise"], trace="splitwise_perf")
    return path


def test_serving_frame_maps_both_sources(serving_store):
    from servecast.predictors.step_time.serving import serving_frame

    with Store(serving_store, read_only=True) as store:
        rows = serving_frame(store)
    kinds = set(rows.select("engine", "kind", "gpu").unique().iter_rows())
    assert kinds == {("vllm", "batch", "a100-40gb-sxm"), ("vllm", "batch", "h100-sxm"),
                     ("trtllm", "batch", "a100-40gb-sxm"), ("trtllm", "batch", "h100-sxm"),
                     ("splitwise", "prompt", "a100-80gb-sxm"), ("splitwise", "prompt", "h100-sxm"),
                     ("splitwise", "token", "a100-80gb-sxm"), ("splitwise", "token", "h100-sxm")}
    batch = rows.filter(pl.col("kind") == "batch")
    assert (batch["iterations"] == batch["output_tokens"]).all()
    assert (rows.filter(pl.col("kind") != "batch")["iterations"] == 1).all()
    assert rows["measured_ms"].min() > 0 and rows["config"].null_count() == 0
    with Store(serving_store, read_only=True) as store:
        trt = serving_frame(store, ("trtllm",), bf16_only=False).filter(
            pl.col("source") == "llm-inference-bench")
        with pytest.raises(InvalidInputError, match="tensorrt-llm; known: vllm, trtllm"):
            serving_frame(store, ("tensorrt-llm",))
    assert set(trt["engine"]) == {"trtllm"} and set(trt["gpu"]) == {"a100-40gb-sxm",
                                                                   "h100-sxm"}
    assert set(trt["kind"]) == {"batch"} and trt.height == 256 + 279  # A100, H100 rows
    assert trt.filter(pl.col("config") == "mixtral-8x7b").height == 40


def test_rows_under_the_bf16_weight_floor_are_excluded_by_the_rule(serving_store):
    """Argonne rows faster per step than streaming the bf16 weights: TensorRT-LLM's Mixtral
    (under the floor at several lengths: the whole group goes, its rows above the floor too)
    and TensorRT-LLM's Qwen2 runs at one length (that length's series goes, the model's other
    lengths stay); vLLM's and Splitwise's rows, none under the floor, all stay."""
    from servecast.predictors.step_time import serving

    with Store(serving_store, read_only=True) as store:
        every = serving.serving_frame(store, bf16_only=False)
        kept = serving.serving_frame(store)
    every = every.with_columns(serving.under_floor(every), serving.not_bf16(every))
    assert not serving.under_floor(kept).any()
    assert kept.height == every.height - every["not_bf16"].sum()
    dropped = every.filter(pl.col("not_bf16"))
    assert set(dropped["engine"]) == {"trtllm"}
    mixtral = every.filter((pl.col("config") == "mixtral-8x7b") & (pl.col("engine") == "trtllm"))
    assert mixtral["not_bf16"].all() and (~mixtral["under_floor"]).sum() > 10
    assert mixtral.filter(pl.col("under_floor"))["prompt_tokens"].n_unique() >= 2
    vllm_mixtral = kept.filter((pl.col("config") == "mixtral-8x7b") & (pl.col("engine") == "vllm"))
    assert vllm_mixtral.height > 20
    qwen = every.filter((pl.col("config") == "qwen2-7b") & (pl.col("engine") == "trtllm")
                        & (pl.col("gpu") == "h100-sxm") & (pl.col("num_gpus") == 1))
    bad = qwen.filter(pl.col("under_floor"))["prompt_tokens"].unique().to_list()
    assert len(bad) == 1
    series = qwen.filter(pl.col("prompt_tokens") == bad[0])
    assert series["not_bf16"].all() and series.height >= 4
    # not what the row says: at batch 1 a step of it takes under a tenth of the floor
    one = series.filter(pl.col("batch_size") == 1)
    floor = serving.weight_floor_ms("qwen2-7b", "h100-sxm", 1, 1)
    assert (one["measured_ms"] / one["iterations"] < floor / 10).all()
    assert not qwen.filter(pl.col("prompt_tokens") != bad[0])["not_bf16"].any()


def _overhead_ms(terms: dict, layers: int, tp: int, gpu: str, sequences: int) -> float:
    """ms an engine overhead's terms add to one iteration (the runtime's contract)."""
    ring = 4 * layers * (tp - 1) * terms["ring_cycles"] / (gpus.catalog_spec(gpu)["Freq"] * 1e3)
    return terms["step_ms"] + ring + terms["seq_ms"] * sequences


@pytest.mark.slow  # fits the operator residuals once per module
def test_overhead_terms_follow_tp_the_clock_and_the_batch(rt):
    """A ring-step cost in cycles adds 2 all-reduces x 2 (TP - 1) ring steps per layer at
    the GPU's clock; a per-sequence cost adds per prefill chunk and decode sequence."""
    call = ("llama-3.1-8b", "h100-sxm")
    base = {tp: rt.engine(*call, tp=tp, overhead_ms=0.0) for tp in (1, 2, 4)}
    ring = {tp: rt.engine(*call, tp=tp, overhead_ms={"ring_cycles": 1000.0}) for tp in (1, 2, 4)}
    for tp in (1, 2, 4):
        added = ring[tp].step_ms([512]) - base[tp].step_ms([512])
        assert added == pytest.approx(4 * 32 * (tp - 1) * 1000.0 / 1980e3)
    slow = {**H100, "Freq": H100["Freq"] / 2}
    assert rt.engine("llama-3.1-8b", slow, tp=2, overhead_ms={"ring_cycles": 1000.0}
                     ).overhead_ms == pytest.approx(2 * ring[2].overhead_ms)
    seq = rt.engine(*call, overhead_ms={"step_ms": 1.0, "seq_ms": 0.25})
    assert seq.step_ms([512, 64], None, [1024] * 6) - base[1].step_ms([512, 64], None,
                                                                      [1024] * 6) \
        == pytest.approx(1.0 + 0.25 * 8)
    with pytest.raises(InvalidInputError, match="unknown overhead term.*bogus"):
        rt.engine(*call, overhead_ms={"bogus": 1.0})
    with pytest.raises(InvalidInputError, match="seq_ms=-1"):
        rt.engine(*call, overhead_ms={"seq_ms": -1})


def test_simulator_fast_paths_keep_the_fitted_overhead_terms():
    """The simulator's table fast paths add the default engine's ring-step and
    per-sequence terms exactly as `step_ms` does (not a fallback)."""
    from servecast.predictors.step_time.runtime import Runtime
    from servecast.simulator import Compiled, Deployment

    terms = {"step_ms": 1.0, "ring_cycles": 5000.0, "seq_ms": 0.05}
    rt = Runtime({}, [], {}, None, {"vllm": terms})
    sim = Compiled(Deployment(model="llama-3.1-8b", gpu="h100-sxm", tp=2), rt)
    assert sim.batch_ms.__name__ == "batch_ms" and sim.decode_ms.__name__ == "decode_ms"
    bare = Runtime({}, [], {}).engine("llama-3.1-8b", "h100-sxm", tp=2)
    want = sim.step_ms([700], [300], [800] * 20)
    assert want - bare.step_ms([700], [300], [800] * 20) == pytest.approx(
        _overhead_ms(terms, 32, 2, "h100-sxm", 21))
    assert sim.batch_ms([700], [300], 20, 20 * 800) == pytest.approx(want, rel=1e-9)
    means = np.array([0.0, 700.0, 65000.0])
    np.testing.assert_allclose(sim.decode_ms(33, means),
                               [sim.step_ms([], [], [m] * 33) for m in means], rtol=1e-9)


@pytest.mark.slow  # fits operator residuals and predicts ~250 serving rows
def test_engine_overheads_fitted_on_development_rows_close_the_gap(frame, serving_store,
                                                                   tmp_path):
    """Overheads fitted on the A100 rows (development) bring the H100's held-out rows
    closer to their measurements, per engine family; the term set is the one with the
    lowest validation MdAPE inside the development rows; saved, loaded and picked by name;
    a card with an unknown term is refused naming it."""
    import shutil

    from servecast.errors import ModelVersionError
    from servecast.predictors.step_time import serving
    from servecast.predictors.step_time.runtime import OVERHEAD_TERMS, Runtime

    with Store(serving_store, read_only=True) as store:
        rows = serving.serving_frame(store).filter(pl.col("prompt_tokens") <= 256)
    dev, test = rows.filter(pl.col("gpu") != "h100-sxm"), rows.filter(pl.col("gpu") == "h100-sxm")
    model = StepTimeModel(trees=30, overhead_ms=None).fit(frame, serving=dev)
    assert set(model.overheads) == {"vllm", "splitwise", "trtllm"}
    for family, terms in model.overheads.items():
        assert set(terms) == set(OVERHEAD_TERMS) and terms["step_ms"] > 0
        val = model.card["overhead_validation"][family]
        chosen = min((v, k) for k, v in val.items() if v is not None)[1].split("+")
        assert {t for t in OVERHEAD_TERMS if terms[t] > 0} <= set(chosen)
    # Splitwise's per-token gap grows with TP: the ring-step term validates better
    val = model.card["overhead_validation"]["splitwise"]
    assert val["step_ms+ring_cycles"] < val["step_ms"]
    rt = model.runtime()
    bare, fitted = serving.predict(rt, test, 0.0), serving.predict(rt, test, None)
    measured = test["measured_ms"].to_numpy()
    for family in ("vllm", "splitwise", "trtllm"):
        m = (test["engine"] == family).to_numpy() & ~np.isnan(bare)
        assert m.sum() > 10
        fitted_mdape = ape_scores(fitted[m], measured[m])["mdape"]
        assert fitted_mdape < ape_scores(bare[m], measured[m])["mdape"]
    model.save(tmp_path / "st")
    card = json.loads((tmp_path / "st" / "model_card.json").read_text())
    for family, terms in model.overheads.items():
        assert card["engine_overheads"][family] == pytest.approx(terms)
    loaded = Runtime.load(tmp_path / "st")
    assert loaded.engine_overhead() == pytest.approx(model.overheads["vllm"])  # the default
    call = ("llama-3.1-8b", "h100-sxm", 4, "bf16")
    e0, e1 = loaded.engine(*call, overhead_ms=0.0), loaded.engine(*call, engine="splitwise")
    assert e1.step_ms([512]) - e0.step_ms([512]) == pytest.approx(
        _overhead_ms(model.overheads["splitwise"], 32, 4, "h100-sxm", 1))
    with pytest.raises(UnknownNameError, match="fitted: splitwise, trtllm, vllm"):
        loaded.engine(*call, engine="sglang")
    bad = shutil.copytree(tmp_path / "st", tmp_path / "bad")
    card["engine_overheads"]["vllm"]["per_token"] = 1.0
    (bad / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelVersionError, match="unknown overhead term.*per_token"):
        Runtime.load(bad)


@pytest.mark.slow  # trains the step-time model from a store through the CLI
def test_cli_train_fits_overheads_from_the_store(serving_store, tmp_path):
    from servecast.predictors.step_time.runtime import describe_overhead

    out = tmp_path / "models" / "step_time"
    cli = [sys.executable, "-m", "servecast.cli"]
    ok = subprocess.run([*cli, "train", "step-time", "--db", serving_store, "--out", out,
                         "--trees", "5"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "engine overhead per iteration: splitwise" in " ".join(ok.stdout.split())
    card = json.loads((out / "model_card.json").read_text())
    assert set(card["engine_overheads"]) == {"splitwise", "trtllm", "vllm"}
    assert card["engine_overheads"]["trtllm"] != card["engine_overheads"]["vllm"]
    sim = subprocess.run([*cli, "simulate", "workload:sharegpt", "--num-prompts", "20",
                          "--rate", "4", "--gpu", "h100-sxm", "--engine", "trtllm",
                          "--step-model", out], capture_output=True, text=True)
    assert sim.returncode == 0, sim.stderr
    line = next(s for s in sim.stdout.splitlines() if s.startswith("Engine overhead per step:"))
    assert line.endswith(f"{describe_overhead(card['engine_overheads']['trtllm'])} "
                         "(fitted for trtllm)")
    base = [*cli, "estimate", "step-time", "--models", out, "--model", "llama-2-70b",
            "--gpu", "h100-sxm", "--tp", "4", "--prefill", "1024", "--json"]
    vllm = json.loads(subprocess.run(base, capture_output=True, text=True, check=True).stdout)
    split = json.loads(subprocess.run([*base, "--engine", "splitwise"], capture_output=True,
                                      text=True, check=True).stdout)
    fitted = card["engine_overheads"]
    assert split["step_ms"] - vllm["step_ms"] == pytest.approx(
        _overhead_ms(fitted["splitwise"], 80, 4, "h100-sxm", 1)
        - _overhead_ms(fitted["vllm"], 80, 4, "h100-sxm", 1), rel=1e-6)
    bad = subprocess.run([*base, "--engine", "tgi"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "fitted:" in bad.stderr
