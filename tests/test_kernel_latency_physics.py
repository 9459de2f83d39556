"""Physics features, input validation and the profiler of the kernel-latency predictor."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from servecast.errors import InvalidInputError, ServecastError, UnknownNameError
from servecast.predictors.kernel_latency.frames import kernel_rows
from servecast.predictors.kernel_latency.ops import canonical_op, shape_dict
from servecast.predictors.kernel_latency.physics import (
    LAUNCH_FLOOR_MS,
    features,
    features_one,
    kernel_work,
    roofline_ms,
)
from servecast.predictors.kernel_latency.specs import SPEC_KEYS, check_spec, spec_matrix

SPEC = {"Dev_Mem": 40, "Mem_Bw": 1000, "Num_Sm": 100, "Core_Per_SM": 64, "Freq": 1000,
        "SingleFLOPs": 10000, "L2Cache": 40}


def test_bmm_flops_bytes_and_roofline_have_known_values():
    ops = np.array(["bmm"], dtype=object)
    shape = {c: np.array([v]) for c, v in zip("BMNK", (2, 64, 32, 16), strict=True)}
    w = kernel_work(ops, shape)
    assert w["flops"][0] == 2 * 2 * 64 * 32 * 16
    assert w["bytes"][0] == 4 * 2 * (64 * 16 + 16 * 32 + 64 * 32)
    t_comp, t_mem = roofline_ms(w, spec_matrix({"d": SPEC}, ["d"]))
    assert t_comp[0] == pytest.approx(w["flops"][0] / 10e12 * 1e3)
    assert t_mem[0] == pytest.approx(w["bytes"][0] / 1e12 * 1e3)


def test_fp16_gemms_run_at_the_tensor_core_peak_given_or_16x_fp32():
    ops = np.array(["vidur.mlp_up_proj", "bmm"], dtype=object)
    shape = {"B": np.array([1.0, 1.0])} | {c: np.array([4096.0] * 2) for c in "MNK"}
    w = kernel_work(ops, shape)
    plain = spec_matrix({"d": SPEC}, ["d", "d"])
    a40_like = spec_matrix({"d": SPEC | {"TensorFLOPs": 40000}}, ["d", "d"])
    t16, _ = roofline_ms(w, plain)
    t4, _ = roofline_ms(w, a40_like)
    assert t16[0] == pytest.approx(w["flops"][0] / (16 * 10e12) * 1e3)
    assert t4[0] == pytest.approx(w["flops"][0] / 40e12 * 1e3)
    assert t16[1] == t4[1] == pytest.approx(w["flops"][1] / 10e12 * 1e3)  # fp32: unchanged
    # the scalar path (the Estimator's) and the batch features see the same key
    cols, base = features_one("vidur.mlp_up_proj", {"M": 4096.0, "N": 4096.0, "K": 4096.0},
                              tuple(a40_like[0]))
    assert base == pytest.approx(features(ops[:1], {c: v[:1] for c, v in shape.items()},
                                          a40_like[:1])[1][0])


def test_power_limit_lowers_only_the_fp32_peak_of_boards_under_budget():
    """sustained = SingleFLOPs x min(1, c x TDP / SingleFLOPs) ** e; no TDP: no limit; the
    roofline baseline keeps the data-sheet peak."""
    from servecast.predictors.kernel_latency.physics import (
        POWER_EXPONENT,
        POWER_GFLOPS_PER_W,
        baseline_ms,
        sustained_fp32,
    )

    low = 0.25 * SPEC["SingleFLOPs"] / POWER_GFLOPS_PER_W  # budget: a quarter of the peak
    assert sustained_fp32(10000.0, low) == pytest.approx(10000 * 0.25 ** POWER_EXPONENT)
    assert sustained_fp32(10000.0, 100 * low) == sustained_fp32(10000.0, np.inf) == 10000
    ops = np.array(["bmm", "bmm", "vidur.mlp_up_proj"], dtype=object)
    shape = {"B": np.ones(3)} | {c: np.full(3, 4096.0) for c in "MNK"}
    w = kernel_work(ops, shape)
    rows = spec_matrix({"free": SPEC, "capped": SPEC | {"TDP": low}},
                       ["free", "capped", "capped"])
    t_comp, _ = roofline_ms(w, rows)
    assert t_comp[1] / t_comp[0] == pytest.approx(0.25 ** -POWER_EXPONENT)
    assert t_comp[2] == pytest.approx(w["flops"][2] / (16 * 10e12) * 1e3)  # tensor cores
    plain = baseline_ms(w, rows)
    assert plain[0] == plain[1] < features(ops, shape, rows)[1][1]


def test_board_power_comes_from_the_spec_the_catalog_or_no_limit():
    from servecast.predictors.kernel_latency.specs import DATASHEET_TDP

    assert check_spec(SPEC)["TDP"] == np.inf  # unknown device: the documented default
    assert check_spec(SPEC | {"Device": "NVIDIA L4"})["TDP"] == 72  # catalog, by alias
    assert check_spec(SPEC | {"Device": "Tesla T4"})["TDP"] == DATASHEET_TDP["Tesla T4"][0]
    assert check_spec(SPEC | {"Device": "NVIDIA L4", "TDP": 60})["TDP"] == 60  # spec wins
    # a frame's device name finds its data sheet too (NeuSight JSONs carry no TDP)
    rows = spec_matrix({"NVIDIA H100 80GB HBM3": SPEC, "mine": SPEC},
                       ["NVIDIA H100 80GB HBM3", "mine"])
    assert rows[:, -1].tolist() == [700.0, np.inf]
    with pytest.raises(InvalidInputError, match="TDP=0 must be a positive"):
        check_spec(SPEC | {"TDP": 0})


def test_conv_is_an_implicit_gemm_and_elementwise_counts_tensors():
    shape = {"B": np.array([2.0]), "in_channels": np.array([8.0]),
             "out_channels": np.array([16.0]), "kernel_size": np.array([3.0]),
             "input_size": np.array([10.0]), "stride": np.array([1.0]),
             "padding": np.array([1.0])}
    w = kernel_work(np.array(["conv"], dtype=object), shape)
    assert (w["gm"][0], w["gn"][0], w["gk"][0]) == (2 * 10 * 10, 16, 8 * 9)
    rows = {"B": np.array([4.0, 4.0]), "H": np.array([8.0, 8.0])}
    w = kernel_work(np.array(["add", "relu"], dtype=object), rows)
    assert list(w["bytes"]) == [3 * 4 * 32, 2 * 4 * 32]


def test_wave_quantization_feature_drops_after_a_full_wave():
    spec = spec_matrix({"d": SPEC}, ["d", "d"])
    # 100 SMs: 100 tiles of 128x128 fill one wave exactly, 101 tiles need a second wave
    shape = {"B": np.array([100.0, 101.0]), "M": np.array([128.0, 128.0]),
             "N": np.array([128.0, 128.0]), "K": np.array([64.0, 64.0])}
    X, base = features(np.array(["bmm", "bmm"], dtype=object), shape, spec)
    eff_col = 21  # efficiency of the first tile size (after 14 + 6 alignment + 1 waves columns)
    assert X[0, eff_col] == pytest.approx(1.0)
    assert X[1, eff_col] == pytest.approx(101 / 200)
    assert (base > LAUNCH_FLOOR_MS).all()


def test_scalar_features_match_the_vectorized_ones_for_every_op():
    """The Estimator's hot path (`features_one`, plain floats) equals `features`' dense
    columns and roofline for every op, odd and aligned dims, several spec sheets."""
    from servecast.predictors.kernel_latency.ops import OPS, SHAPE_COLUMNS
    from servecast.predictors.kernel_latency.physics import n_spec_features

    rng = np.random.default_rng(0)
    specs = [SPEC, SPEC | {"Num_Sm": 7, "L2Cache": 0.5, "Mem_Bw": 50},
             SPEC | {"SingleFLOPs": 90000, "Num_Sm": 132}, SPEC | {"TensorFLOPs": 40000},
             SPEC | {"TDP": 40}]
    for op, (_, cols, _, _) in OPS.items():
        for spec in specs:
            for _ in range(6):
                dims = {c: float(rng.choice([1, 3, 32, 64, 127, 1000, 4096])) for c in cols}
                if op == "conv":
                    dims |= {"kernel_size": 3.0, "input_size": 28.0, "stride": 2.0,
                             "padding": 0.0}
                shape = {c: np.array([dims.get(c, np.nan)]) for c in SHAPE_COLUMNS}
                row = spec_matrix({"d": spec}, ["d"])
                X, base = features(np.array([op], dtype=object), shape, row)
                cols1, base1 = features_one(op, shape_dict(op, dims), tuple(row[0]))
                dense = X.shape[1] - n_spec_features() - len(OPS) - len(
                    {f for f, *_ in OPS.values()})
                assert len(cols1) == dense
                np.testing.assert_allclose(np.float32(cols1), X[0, :dense], rtol=1e-6,
                                           atol=1e-6, err_msg=f"{op} {dims}")
                assert base1 == pytest.approx(base[0], rel=1e-12)


def test_unknown_op_missing_columns_bad_spec_and_dims_raise_clear_errors():
    devices = {"d": SPEC}
    with pytest.raises(UnknownNameError, match="unknown op 'matmull'"):
        canonical_op("matmull")
    frame = pl.DataFrame({"op": ["bmm"], "device": ["d"], "B": [1], "M": [8], "N": [8]})
    with pytest.raises(InvalidInputError, match="lacks shape column 'K'"):
        kernel_rows(frame, devices)
    bad = frame.with_columns(K=pl.lit(0))
    with pytest.raises(InvalidInputError, match="row 0: op 'bmm' needs K > 0"):
        kernel_rows(bad, devices)
    with pytest.raises(InvalidInputError, match="missing key.*Mem_Bw"):
        check_spec({k: 1 for k in SPEC_KEYS if k != "Mem_Bw"})
    with pytest.raises(InvalidInputError, match="TensorFLOPs=-5 must be a positive"):
        check_spec(SPEC | {"TensorFLOPs": -5})
    with pytest.raises(UnknownNameError, match="device 'x' has no spec"):
        kernel_rows(frame.with_columns(K=pl.lit(8), device=pl.lit("x")), devices)
    with pytest.raises(InvalidInputError, match="-3"):
        shape_dict("softmax", [4, -3])
    with pytest.raises(InvalidInputError, match="expected 4"):
        shape_dict("bmm", [4])
    assert shape_dict("bmm", [8, 16, 32]) == {"B": 1.0, "M": 8.0, "N": 16.0, "K": 32.0}
    assert issubclass(InvalidInputError, ServecastError)


def test_profiler_measures_cpu_ops_in_the_kernel_latencies_schema(tmp_path):
    from servecast.collectors.kernel_profiler import profile_kernels, write_profile
    from servecast.schema import columns

    shapes = {"bmm": [{"B": 2, "M": 32, "N": 32, "K": 32}], "ln": [{"B": 8, "H": 64}],
              "gelu": [{"B": 8, "H": 64}]}
    df = profile_kernels(["bmm", "layernorm", "gelu"], "cpu", shapes=shapes, warmup=1,
                         repeats=3)
    assert df.columns == [name for name, _ in columns("kernel_latencies")]
    assert df["op"].to_list() == ["bmm", "ln", "gelu"]
    assert (df["latency_ms"] > 0).all()
    assert json.loads(df["extra"][0])["timer"] == "perf_counter"
    out = write_profile(df, tmp_path / "p.csv")
    assert pl.read_csv(out).height == 3
    with pytest.raises(InvalidInputError, match="cannot profile"):
        profile_kernels(["vidur.emb"], "cpu")
    with pytest.raises(InvalidInputError, match="use cpu or cuda"):
        profile_kernels(["bmm"], "tpu")


def test_transfer_bounds_have_known_values():
    """Latency = roofline x exp(shape effect + chip constant): the scaled bounds are exact,
    the plain mean is off by the held-out chip's constant vs the others' mean."""
    from servecast.predictors.kernel_latency.evaluation import transfer_bounds
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    devices = {f"gpu{i}": SPEC | {"Num_Sm": 100 // 2**i} for i in range(3)}
    const = {"gpu0": 0.0, "gpu1": 0.1, "gpu2": 0.2}
    rng = np.random.default_rng(0)
    shapes = [{"op": "bmm", "B": 2, "M": m, "N": 64, "K": 32} for m in (16, 64, 256, 1024)]
    shapes += [{"op": "softmax", "B": b, "H": 512} for b in (1, 8, 64)]
    rows = [s | {"device": d, "effect": e} for s, e in zip(shapes, rng.normal(0, 0.5, 7),
                                                           strict=True) for d in devices]
    rows.append(shapes[0] | {"device": "gpu0", "effect": 0.0})  # a repeat
    frame = pl.DataFrame(rows + [{"op": "bmm", "B": 1, "M": 8, "N": 8, "K": 8,
                                  "device": "gpu1", "effect": 0.0}])  # on one chip only
    roof = KernelLatencyPredictor.predict_roofline(frame, devices)
    frame = frame.with_columns(latency_ms=roof * np.exp(
        frame["effect"].to_numpy() + frame["device"].replace_strict(const).to_numpy()))
    res = transfer_bounds(frame, devices)
    got = {(r["held_out"], r["op"]): r for r in res.to_dicts()}
    assert got[("gpu0", "all")]["shapes"] == 7 and got[("gpu1", "bmm")]["shapes"] == 4
    for r in res.to_dicts():
        assert r["shape_mean_scaled"] == pytest.approx(0, abs=1e-9)
        assert r["best_chip_scaled"] == pytest.approx(0, abs=1e-9)
    expect = {"gpu0": np.expm1(0.15), "gpu1": 0.0, "gpu2": -np.expm1(-0.15)}
    for d, e in expect.items():
        assert got[(d, "all")]["shape_mean"] == pytest.approx(100 * e, abs=1e-6)


def test_device_columns_are_exactly_the_ones_the_spec_moves():
    from servecast.predictors.kernel_latency.physics import DENSE_COLUMNS, DEVICE_COLUMNS

    rng = np.random.default_rng(1)
    ops = np.array(["bmm", "linear", "softmax", "conv"] * 50, dtype=object)
    shape = {c: rng.integers(1, 300, len(ops)).astype(float) for c in
             ("B", "M", "N", "K", "H", "in_channels", "out_channels", "input_size")}
    shape["kernel_size"] = np.full(len(ops), 3.0)
    other = SPEC | {"Mem_Bw": 300, "Num_Sm": 36, "SingleFLOPs": 4000, "L2Cache": 2}
    a, _ = features(ops, shape, spec_matrix({"d": SPEC}, ["d"] * len(ops)))
    b, _ = features(ops, shape, spec_matrix({"d": other}, ["d"] * len(ops)))
    moved = {c for i, c in enumerate(DENSE_COLUMNS) if not np.array_equal(a[:, i], b[:, i])}
    assert moved == DEVICE_COLUMNS


def test_shape_view_members_see_the_device_only_through_the_roofline():
    """Two GPUs with the same peak FLOP/s and bandwidth but other SM counts and L2: the
    shape-only view predicts the same latency on both, the spec view does not."""
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    rng = np.random.default_rng(0)
    devices = {"a": SPEC, "b": SPEC | {"Num_Sm": 30, "L2Cache": 4}, "c": SPEC | {"Num_Sm": 60}}
    n = 600
    frame = pl.DataFrame({"op": "bmm", "device": rng.choice(["a", "b"], n),
                          "B": rng.integers(1, 8, n), "M": rng.integers(1, 512, n),
                          "N": rng.integers(1, 512, n), "K": rng.integers(1, 512, n)})
    frame = frame.with_columns(latency_ms=KernelLatencyPredictor.predict_roofline(
        frame, devices) * rng.uniform(1, 3, n))
    probe = frame[:40].with_columns(device=pl.lit("c"))
    same_roof = probe.with_columns(device=pl.lit("a"))
    kw = dict(epochs=2, batch_size=256, ensemble=1, max_rows=n)
    shape = KernelLatencyPredictor(devices, views=("shape",), **kw).fit(frame)
    np.testing.assert_allclose(shape.predict(probe)["latency_ms"],
                               shape.predict(same_roof)["latency_ms"])
    both = KernelLatencyPredictor(devices, **kw).fit(frame)
    assert not np.allclose(both.predict(probe)["latency_ms"],
                           both.predict(same_roof)["latency_ms"])
    with pytest.raises(InvalidInputError, match="unknown view"):
        KernelLatencyPredictor(views=("spec", "gpu"))


def test_member_blocks_run_the_merged_ensemble_exactly():
    from servecast.predictors.kernel_latency.mlp import merge_mlps
    from servecast.predictors.kernel_latency.runtime import blocks_forward, member_blocks

    def mlp_forward(weights, X):  # the plain dense forward pass: the reference
        h = X
        for i in range(0, len(weights), 2):
            h = h @ weights[i] + weights[i + 1]
            if i + 2 < len(weights):
                h = h / (1.0 + np.exp(-h))
        return h[:, 0]

    rng = np.random.default_rng(0)
    shapes = [(5, 4), (4,), (4, 4), (4,), (4, 1), (1,)]
    merged = merge_mlps([[rng.normal(size=s) for s in shapes] for _ in range(3)])
    X = rng.normal(size=(7, 5))
    first = X @ merged[0] + merged[1]
    for members in (3, 1):  # per member, or the whole hidden layer as one dense block
        np.testing.assert_allclose(blocks_forward(first, member_blocks(merged, members)),
                                   mlp_forward(merged, X), rtol=1e-5)
    assert member_blocks(merged, 2) is None  # not block-diagonal over 2 members
    assert member_blocks(merged, 5) is None  # width 12 does not split in 5
    # weighted members: the merged MLP is the weighted mean of the members' outputs
    members = [[rng.normal(size=s) for s in shapes] for _ in range(3)]
    wts = [0.6, 0.2, 0.2]
    weighted = merge_mlps(members, wts)
    np.testing.assert_allclose(
        blocks_forward(X @ weighted[0] + weighted[1], member_blocks(weighted, 3)),
        sum(c * mlp_forward(m, X) for c, m in zip(wts, members, strict=True)), rtol=1e-5)


def test_standardize_zeroes_constant_columns_and_accepts_a_cleaned_std():
    """`standardize`: (X - mean) / std per column, float64; a std not above the 1e-6 guard
    (zero, the guard itself, negative, NaN) reads 0; cleaning the std first changes no bit."""
    from servecast.predictors.kernel_latency.runtime import clean_std, standardize

    X = np.array([[1.0, 5.0, 2.0, 3.0, 4.0, 7.0], [3.0, 6.0, 9.0, -1.0, 0.5, 7.0]],
                 dtype=np.float32)
    mean = np.array([2.0, 5.0, 1.0, 1.0, 1.0, 6.0])
    std = np.array([0.5, 1e-6, 0.0, -1.0, np.nan, np.inf])
    Z = standardize(X, mean, std)
    assert Z.dtype == np.float64 and Z.shape == X.shape
    np.testing.assert_array_equal(Z[:, 0], [-2.0, 2.0])
    np.testing.assert_array_equal(Z[:, 1:], 0.0)
    assert standardize(X, mean, clean_std(std)).tobytes() == Z.tobytes()


def test_view_weights_split_the_average_between_views():
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor, view_weights

    assert view_weights(["spec", "spec", "shape", "shape"], 0.75) == [
        0.125, 0.125, 0.375, 0.375]
    assert view_weights(["spec", "spec"], 0.75) == [0.5, 0.5]  # one view: plain mean
    with pytest.raises(InvalidInputError, match=r"shape_weight=1.5.*\[0, 1\]"):
        KernelLatencyPredictor(shape_weight=1.5)


def test_leave_one_gpu_out_holds_out_every_board_of_a_chip():
    from servecast.predictors.kernel_latency.evaluation import leave_one_gpu_out
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    devices = {"a": SPEC, "a80": SPEC | {"Dev_Mem": 80}, "b": SPEC | {"Num_Sm": 50},
               "c": SPEC | {"Num_Sm": 25}}
    rng = np.random.default_rng(0)
    n = 400
    frame = pl.DataFrame({"op": "bmm", "device": rng.choice(list(devices), n),
                          "B": rng.integers(1, 8, n), "M": rng.integers(1, 256, n),
                          "N": rng.integers(1, 256, n), "K": rng.integers(1, 256, n)})
    frame = frame.with_columns(latency_ms=KernelLatencyPredictor.predict_roofline(
        frame, devices) * rng.uniform(1, 2, n))
    fitted = []

    def make(devices):
        fitted.append(KernelLatencyPredictor(devices, epochs=1, ensemble=1, batch_size=256))
        return fitted[-1]

    res = leave_one_gpu_out(frame, devices, make, hold_out=["a80"])
    assert res["held_out"].unique().to_list() == ["a, a80"]
    assert fitted[0].card["data"]["devices"] == ["b", "c"]
    boards = frame["device"].is_in(["a", "a80"]).sum()
    assert res.filter(pl.col("op") == "all")["rows"].item() == boards
    assert set(leave_one_gpu_out(frame, devices, make)["held_out"]) == {"a, a80", "b", "c"}


def test_device_specs_from_the_store_keep_an_optional_tensor_peak(tmp_path):
    from servecast.predictors.kernel_latency.data import device_specs
    from servecast.store import Store

    (tmp_path / "a.json").write_text(json.dumps({"Device": "L4x", **SPEC, "TensorFLOPs": 121000}))
    (tmp_path / "b.json").write_text(json.dumps({"Device": "Px", **SPEC}))
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest("neusight", [tmp_path / "a.json", tmp_path / "b.json"], trace="specs")
        specs = device_specs(store)
    assert specs["L4x"]["TensorFLOPs"] == 121000
    assert "TensorFLOPs" not in specs["Px"] and check_spec(specs["Px"])["TensorFLOPs"] == 16e4


def _bmm_at_roofline(devices: dict, n: int) -> pl.DataFrame:
    """n random large bmm kernels on `devices` at 1.5 x the learner's roofline (at the power
    constant in force) with 2% noise."""
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"op": "bmm", "device": rng.choice(list(devices), n),
                          "B": rng.integers(1, 8, n), "M": rng.integers(256, 2048, n),
                          "N": rng.integers(256, 2048, n), "K": rng.integers(256, 2048, n)})
    rows = kernel_rows(frame, devices)
    roof = features(rows.ops, rows.shape, rows.spec)[1]
    return frame.with_columns(latency_ms=roof * 1.5 * rng.lognormal(0, 0.02, n))


@pytest.mark.slow
def test_nested_selection_finds_the_power_limit_the_data_follows():
    """Latencies made at the power-limited roofline (c = 60) of boards with different TDPs:
    for every held-out chip the inner leave-one-out picks c = 60 over no limit, and the table
    holds every setting once per chip and op."""
    from servecast.predictors.kernel_latency import physics
    from servecast.predictors.kernel_latency.evaluation import nested_selection
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    devices = {"a": SPEC | {"TDP": 300}, "b": SPEC | {"Num_Sm": 60, "TDP": 30},
               "c": SPEC | {"Num_Sm": 30, "TDP": 60}}
    shipped = physics.POWER_GFLOPS_PER_W
    with physics.power_budget(60):
        frame = _bmm_at_roofline(devices, 900)
    res = nested_selection(
        frame, devices, lambda d, view: KernelLatencyPredictor(
            d, epochs=2, ensemble=1, batch_size=128, views=(view,)),
        powers=[np.inf, 60], weights=[0.0, 1.0], ops=["bmm"])
    assert res.height == 3 * 2 * 2
    chosen = res.filter(pl.col("chosen"))
    assert sorted(chosen["held_out"]) == ["a", "b", "c"]
    assert chosen["power"].to_list() == [60.0] * 3
    assert physics.POWER_GFLOPS_PER_W == shipped  # the budget is restored after the block


@pytest.mark.slow
def test_nested_selection_chooses_the_training_length_inside_the_other_chips():
    """Latencies at 1.5 x the roofline: one epoch of a few steps cannot learn the offset,
    eight can, so every held-out chip gets the longer fit, chosen by its inner score; every
    (power, length, weight) setting is scored once per chip and op."""
    from servecast.predictors.kernel_latency.evaluation import nested_selection
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    devices = {"a": SPEC, "b": SPEC | {"Num_Sm": 60}, "c": SPEC | {"Num_Sm": 30}}
    frame = _bmm_at_roofline(devices, 600)
    asked = []

    def make(d, view, epochs):
        asked.append(epochs)
        return KernelLatencyPredictor(d, epochs=epochs, ensemble=1, batch_size=128, lr=1e-3,
                                      views=(view,))

    res = nested_selection(frame, devices, make, powers=[60], weights=[0.0, 1.0], ops=["bmm"],
                           epochs=[1, 8])
    assert sorted(set(asked)) == [1, 8]
    assert res.height == 3 * 2 * 2
    chosen = res.filter(pl.col("chosen"))
    assert chosen["epochs"].to_list() == [8, 8, 8]
    for g in "abc":  # the chosen setting is the one with the lowest inner score
        mine = res.filter(pl.col("held_out") == g)
        assert mine.filter(pl.col("chosen"))["inner"].item() == mine["inner"].min()


def test_efficiency_bands_give_each_chip_its_fraction_of_the_roofline():
    """Latency = roofline / 0.5 on one chip and / 0.8 on another: every band of each chip
    reports that fraction, and the bands split the rows by measured latency."""
    from servecast.predictors.kernel_latency.evaluation import LATENCY_BANDS, efficiency_bands

    devices = {"slow": SPEC, "fast": SPEC | {"Num_Sm": 50}}
    sizes = [64, 256, 1024, 2048, 4096]
    frame = pl.DataFrame([{"op": op, "device": d, "B": 1, "M": m, "N": m, "K": m}
                          for d in devices for op in ("bmm", "linear") for m in sizes])
    rows = kernel_rows(frame, devices)
    t_comp, t_mem = roofline_ms(kernel_work(rows.ops, rows.shape), rows.spec)
    frac = np.where(frame["device"] == "slow", 0.5, 0.8)
    frame = frame.with_columns(latency_ms=np.maximum(t_comp, t_mem) / frac)
    res = efficiency_bands(frame, devices)
    assert set(res["held_out"]) == {"slow", "fast"}
    for r in res.to_dicts():
        assert r["efficiency"] == pytest.approx(0.5 if r["held_out"] == "slow" else 0.8)
    assert res["rows"].sum() == frame.height
    lat = frame.filter((pl.col("device") == "slow") & (pl.col("op") == "bmm"))["latency_ms"]
    low = int((lat < LATENCY_BANDS[1]).sum())
    got = res.filter((pl.col("held_out") == "slow") & (pl.col("op") == "bmm")
                     & (pl.col("band") == f"0-{LATENCY_BANDS[1]:g} ms"))
    assert (got["rows"].item() if got.height else 0) == low
