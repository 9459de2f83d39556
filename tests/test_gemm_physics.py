"""GEMM physics of the operator model: the fastest of several output tiles, their operand
traffic at the bandwidth and fp8's activation-quantization pass, on catalog spec sheets and
on the measured vLLM tables of H100, A100 and L40S."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from servecast import gpus
from servecast.predictors.operator_latency import physics
from servecast.predictors.operator_latency.data import operator_frame
from servecast.store import Store

GPUS = ("a100-sxm", "h100-sxm", "l40s", "b200", "l4", "mi300x")


def _fixed_tile_ms(spec, M, N, K):
    """Tile time of one 128 x 128 tile per thread block, no split-K (the old rule), with the
    same share of its operand traffic at the bandwidth."""
    blocks = np.ceil(M / 128.0) * np.ceil(N / 128.0)
    waves = np.ceil(blocks / spec["Num_Sm"])
    comp = waves * 2.0 * 128.0 * 128.0 * K / (spec["TensorFLOPs"] * 1e9 / spec["Num_Sm"])
    traffic = physics.TILE_TRAFFIC * blocks * 256.0 * K * 2.0 / (spec["Mem_Bw"] * 1e9)
    return (comp + traffic) * 1e3


@pytest.mark.parametrize("gpu", GPUS)
def test_the_fastest_tile_is_between_the_roofline_and_one_fixed_tile(gpu):
    spec = gpus.catalog_spec(gpu)
    M, N, K = (a.ravel().astype(float) for a in np.meshgrid(
        [1, 16, 100, 257, 1024, 4097, 16384], [64, 192, 1024, 4096, 14336], [128, 4096, 8192]))
    t, X = physics.features("gemm", spec, dtype="bf16", M=M, N=N, K=K)
    tile = physics.gemm_tile_ms(spec, "bf16", M, N, K)
    # the feature is log(t_tile + 1e-9 ms): compute plus the tiles' operand traffic
    assert np.exp(X[:, 1]) - 1e-9 == pytest.approx(tile["t_tile"])
    assert tile["t_tile"] == pytest.approx(tile["t_comp"] + tile["t_traffic"])
    assert np.all(tile["t_tile"] <= _fixed_tile_ms(spec, M, N, K) * (1 + 1e-9))
    assert np.all(t >= physics.roofline("gemm", spec, dtype="bf16", M=M, N=N, K=K))
    # a narrow output (N = 64) fits a 64-wide tile exactly: no padded columns
    narrow = physics.gemm_tile_ms(spec, "bf16", np.array([4096.0]), np.array([64.0]),
                                  np.array([4096.0]))
    assert narrow["pad"][0] == 1.0 and narrow["blocks"][0] >= 4096 / 128


def test_fp8_adds_an_activation_quantization_pass_in_sm_cycles():
    spec = gpus.catalog_spec("h100-sxm")
    M = np.array([1024.0, 2048.0, 4096.0])
    q = physics.quant_ms(spec, "fp8", M, 4096.0)
    assert q[1] == pytest.approx(2 * q[0]) and q[2] == pytest.approx(4 * q[0])
    assert q[0] == pytest.approx(1024 * 4096 / (physics.QUANT_ELEMS_PER_CYCLE
                                                * spec["Num_Sm"] * spec["Freq"] * 1e6) * 1e3)
    assert np.all(physics.quant_ms(spec, "bf16", M, 4096.0) == 0.0)
    half_clock = physics.quant_ms({**spec, "Freq": spec["Freq"] / 2}, "fp8", M, 4096.0)
    assert half_clock == pytest.approx(2 * q)


def test_the_quantization_pass_tracks_h100s_measured_fp8_gemms(tmp_path, data):
    """On H100's measured fp8 GEMMs of at least 1024 tokens, measured / physics spreads half
    as wide with the quantization pass as without it."""
    with Store(tmp_path / "h100.duckdb") as store:
        store.ingest("aiconfigurator", [data / "gpu/aiconfigurator/vllm/h100_sxm"],
                     trace="aiconfigurator")
        frame = operator_frame(store)
    rows = frame.filter((pl.col("op") == "gemm") & (pl.col("dtype") == "fp8")
                        & (pl.col("M") >= 1024))
    assert rows.height > 1000
    spec = gpus.resolve_spec("h100_sxm")
    shape = {c: rows[c].to_numpy().astype(float) for c in ("M", "N", "K")}
    t, _X = physics.features("gemm", spec, dtype="fp8", **shape)
    without = t - physics.quant_ms(spec, "fp8", shape["M"], shape["K"])

    def iqr(ms):
        q25, q75 = np.percentile(np.log(rows["latency_ms"].to_numpy() / ms), [25, 75])
        return q75 - q25

    assert iqr(t) < 0.6 * iqr(without)


def test_tile_traffic_grows_with_the_ridge_point_and_picks_the_widest_tile():
    """A large GEMM's operand traffic costs TILE_TRAFFIC x (rows + columns) x K bytes per
    output tile over the bandwidth: halving the bandwidth doubles it, the compute part stays,
    and the big 128 x 256 tile (the least traffic per FLOP) is the one chosen."""
    shape = {"M": np.array([8192.0]), "N": np.array([8192.0]), "K": np.array([8192.0])}
    spec = gpus.catalog_spec("h100-sxm")
    tile = physics.gemm_tile_ms(spec, "bf16", **shape)
    assert tile["blocks"][0] == (8192 / 128) * (8192 / 256)
    bytes_read = tile["blocks"][0] * (128 + 256) * 8192 * 2.0
    assert tile["t_traffic"][0] == pytest.approx(
        physics.TILE_TRAFFIC * bytes_read / (spec["Mem_Bw"] * 1e9) * 1e3)
    slow = physics.gemm_tile_ms({**spec, "Mem_Bw": spec["Mem_Bw"] / 2}, "bf16", **shape)
    assert slow["t_traffic"][0] == pytest.approx(2 * tile["t_traffic"][0])
    assert slow["t_comp"][0] == pytest.approx(tile["t_comp"][0])
    # the traffic over the FLOP time at the peak orders GPUs by their ridge point
    share, ridge = {}, {}
    for g in GPUS[:4]:
        s = gpus.catalog_spec(g)
        flop_ms = 2.0 * 8192.0**3 / (s["TensorFLOPs"] * 1e9) * 1e3
        share[g] = physics.gemm_tile_ms(s, "bf16", **shape)["t_traffic"][0] / flop_ms
        ridge[g] = s["TensorFLOPs"] / s["Mem_Bw"]
    assert sorted(share, key=share.get) == sorted(ridge, key=ridge.get)


@pytest.mark.slow  # ingests two GPUs' aiconfigurator tables
def test_tile_traffic_closes_the_gap_between_gpus_on_large_gemms(tmp_path, data, monkeypatch):
    """Large bf16 GEMMs (M, N, K >= 4096) run further above their FLOP time on the L40S
    (high ridge point) than on the A100 (low): measured / physics of the two GPUs moves
    closer with the tiles' operand traffic than without it."""
    with Store(tmp_path / "two.duckdb") as store:
        store.ingest("aiconfigurator", [data / f"gpu/aiconfigurator/vllm/{g}"
                                        for g in ("a100_sxm", "l40s")], trace="aiconfigurator")
        frame = operator_frame(store)
    rows = frame.filter((pl.col("op") == "gemm") & (pl.col("dtype") == "bf16")
                        & (pl.col("M") >= 4096) & (pl.col("N") >= 4096) & (pl.col("K") >= 4096))

    def gap():
        med = {}
        for (dev,), part in rows.group_by("device"):
            shape = {c: part[c].to_numpy().astype(float) for c in ("M", "N", "K")}
            t, _X = physics.features("gemm", gpus.resolve_spec(dev), dtype="bf16", **shape)
            med[dev] = np.median(np.log(part["latency_ms"].to_numpy() / t))
        assert len(med) == 2 and min(len(p) for p in rows.partition_by("device")) > 100
        return med["l40s"] - med["a100_sxm"]

    with_traffic = gap()
    monkeypatch.setattr(physics, "TILE_TRAFFIC", 0.0)
    without = gap()
    assert without > 0.0 and 0.0 < with_traffic < 0.8 * without


def test_warm_l2_reads_small_weights_from_the_l2_only_where_a_row_says_so():
    """Rows marked `warm_l2` (a benchmark's repeated GEMM) read the fp8 weights that fit in
    WARM_L2_FP8 of the L2 at the L2's rate; a serving call (no mark) streams them from DRAM,
    and bf16 keeps DRAM unless WARM_L2_BF16 is set."""
    from servecast.predictors.operator_latency.predictor import VIEWS
    from servecast.predictors.operator_latency.runtime import Runtime

    spec = gpus.catalog_spec("l40s")
    small, big = {"M": 1.0, "N": 2048.0, "K": 2048.0}, {"M": 1.0, "N": 16384.0, "K": 16384.0}
    cold = physics.gemm_mem_ms(spec, "fp8", **small)
    warm = physics.gemm_mem_ms(spec, "fp8", **small, warm_l2=1.0)
    weights = 2048.0 * 2048.0  # fp8: one byte each, well inside an eighth of the 96 MB L2
    l2_rate = physics.GEMM_L2_BYTES_PER_CYCLE * spec["Num_Sm"] * spec["Freq"] * 1e6
    assert warm == pytest.approx(cold - (weights / (spec["Mem_Bw"] * 1e9)
                                         - weights / l2_rate) * 1e3)
    assert warm < 0.5 * cold
    # weights far over the fraction: only the part that fits comes from the L2
    hit = physics.WARM_L2_FP8 * spec["L2Cache"] * 1e6
    assert physics.gemm_mem_ms(spec, "fp8", **big) - physics.gemm_mem_ms(
        spec, "fp8", **big, warm_l2=1.0) == pytest.approx(
            (hit / (spec["Mem_Bw"] * 1e9) - hit / l2_rate) * 1e3)
    assert physics.gemm_mem_ms(spec, "bf16", **small, warm_l2=1.0) == pytest.approx(
        physics.gemm_mem_ms(spec, "bf16", **small))
    # the runtime: a frame's warm_l2 column reaches the physics; the step-time model's call
    # (`op_ms`, no residual fitted here) is a serving one
    rt = Runtime({}, VIEWS["relative"])
    frame = {"device": ["l40s"] * 2, "op": ["gemm"] * 2, "dtype": ["fp8"] * 2,
             "kv_dtype": ["bf16"] * 2, "M": [1.0] * 2, "N": [2048.0] * 2, "K": [2048.0] * 2,
             "B": [1] * 2, "H": [1] * 2, "kv_heads": [1] * 2, "head_dim": [128] * 2,
             "tp": [1] * 2, "warm_l2": [1.0, 0.0]}
    t, _roof, _X = rt.physics_rows(frame)
    serving = float(np.ravel(rt.op_ms("gemm", spec, dtype="fp8", **small))[0])
    assert t[0] < t[1] == pytest.approx(serving)
    assert 0.0 < t[1] - t[0] <= cold - warm  # the tile time may bound it first


def test_gemm_bytes_passed_in_give_the_same_memory_time():
    """`features` hands its GEMM bytes to `gemm_mem_ms` (one computation): the same times as
    `gemm_mem_ms` working them out itself, warm L2 or not."""
    spec = gpus.catalog_spec("l40s")
    M, N, K = np.array([1.0, 64.0, 4096.0]), np.array([2048.0, 4096.0, 14336.0]), 4096.0
    nbytes = physics.gemm_work(spec, "fp8", M, N, K)[1]
    for warm in (0.0, 1.0):
        assert np.array_equal(physics.gemm_mem_ms(spec, "fp8", M, N, K, warm, nbytes),
                              physics.gemm_mem_ms(spec, "fp8", M, N, K, warm))
