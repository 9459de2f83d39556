"""GEMM physics of the operator model: the fastest of several output tiles and fp8's
activation-quantization pass, on catalog spec sheets and on H100's measured vLLM tables."""

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
    """Compute time of one 128 x 128 tile per thread block, no split-K (the old rule)."""
    blocks = np.ceil(M / 128.0) * np.ceil(N / 128.0)
    waves = np.ceil(blocks / spec["Num_Sm"])
    return waves * 2.0 * 128.0 * 128.0 * K / (spec["TensorFLOPs"] * 1e9 / spec["Num_Sm"]) * 1e3


@pytest.mark.parametrize("gpu", GPUS)
def test_the_fastest_tile_is_between_the_roofline_and_one_fixed_tile(gpu):
    spec = gpus.catalog_spec(gpu)
    M, N, K = (a.ravel().astype(float) for a in np.meshgrid(
        [1, 16, 100, 257, 1024, 4097, 16384], [64, 192, 1024, 4096, 14336], [128, 4096, 8192]))
    t, X = physics.features("gemm", spec, dtype="bf16", M=M, N=N, K=K)
    t_comp = np.exp(X[:, 1]) - 1e-9  # the feature is log(t_comp + 1e-9 ms)
    assert np.all(t_comp <= _fixed_tile_ms(spec, M, N, K) * (1 + 1e-9))
    assert np.all(t >= physics.roofline("gemm", spec, dtype="bf16", M=M, N=N, K=K))
    # a narrow output (N = 64) fits a 64-wide tile exactly: no padded columns
    blocks, pad = physics.gemm_tiling(spec, "bf16", np.array([4096.0]), np.array([64.0]),
                                      np.array([4096.0]))
    assert pad[0] == 1.0 and blocks[0] >= 4096 / 128


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
