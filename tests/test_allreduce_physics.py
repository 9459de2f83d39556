"""All-reduce physics of the operator model: vLLM's custom all-reduce is a latency floor
that does not grow with TP for small messages and the ring / two-shot bytes over one NVLink
direction for large ones (`physics.allreduce_ms`)."""

from __future__ import annotations

import numpy as np
import pytest

from servecast import gpus
from servecast.predictors.operator_latency import physics

GPUS = ("a100-sxm", "h100-sxm", "b200")
TPS = np.array([2.0, 4.0, 8.0])


def _ms(spec, N, tp):
    """Physics all-reduce time (ms) of N bf16 elements at each TP of `tp`."""
    return physics.features("allreduce", spec, N=np.full_like(tp, N), tp=tp)[0]


@pytest.mark.parametrize("gpu", GPUS)
def test_a_small_message_costs_the_floor_at_every_tp(gpu):
    # 4096 elements (8 KB): vLLM's one-shot kernel takes 4-7 us at TP 2, 4 and 8 alike
    t = _ms(gpus.catalog_spec(gpu), 4096.0, TPS)
    assert t[-1] <= t[0] * 1.1
    assert np.all(t < 2.0 * physics.AR_FLOOR_MS)
    assert np.all(t >= physics.AR_FLOOR_MS)


@pytest.mark.parametrize("gpu", GPUS)
def test_a_large_message_is_bound_by_the_link(gpu):
    spec, N = gpus.catalog_spec(gpu), 2.0**27  # 256 MiB of bf16
    t = _ms(spec, N, TPS)
    ring = 2.0 * (TPS - 1.0) / TPS * 2.0 * N / (spec["Interconnect_Bw"] * 0.5e9) * 1e3
    assert t == pytest.approx(ring / physics.LINK_EFFICIENCY, rel=0.02)  # the floor: < 2%
    roof = physics.roofline("allreduce", spec, N=np.full_like(TPS, N), tp=TPS)
    assert roof == pytest.approx(ring)
    assert np.all(t > roof)


def test_the_link_time_scales_with_the_interconnect_not_the_gpu_name():
    spec = gpus.catalog_spec("h100-sxm")
    fast = dict(spec, Interconnect_Bw=2.0 * spec["Interconnect_Bw"])
    _lat, slow_link = physics.allreduce_ms(spec, 2.0**28, 8.0)
    _lat, fast_link = physics.allreduce_ms(fast, 2.0**28, 8.0)
    assert slow_link == pytest.approx(2.0 * fast_link)
