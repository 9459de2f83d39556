"""Beam search as the engines run it (`servecast.simulator.core`, module doc): which kernel
reads a beam request's prompt once, the KV TensorRT-LLM's XQA kernel reads per step by
hand, the KV blocks the beams hold, and MLPerf's GPT-J run with its 4 beams by default."""

from __future__ import annotations

import pytest

from servecast.errors import InvalidInputError
from servecast.predictors.step_time.configs import load_config
from servecast.simulator import Compiled, Deployment, Engine, Request
from servecast.simulator.core import XQA_TILE_TOKENS, beam_kv_blocks, shared_read_tile


@pytest.fixture(scope="module")
def gptj_trt():
    return Compiled(Deployment(model="gpt-j-6b", gpu="h100-sxm", dtype="fp8",
                               kv_cache_dtype="fp8", engine="trtllm"))


def test_which_kernel_reads_the_prompt_once():
    """TensorRT-LLM's XQA takes 4 beams of a head size up to 256 with at most 32 query rows
    per CTA and no vanilla multi-head attention at head size <= 128; otherwise (and under
    vLLM) each beam reads the whole context itself."""
    gptj, mha128, gqa8, qwen, bloom = (load_config(m) for m in (
        "gpt-j-6b", "llama-2-7b", "llama-2-70b", "qwen2-7b", "bloom-176b"))
    assert shared_read_tile("trtllm", gptj, 4) == XQA_TILE_TOKENS == 256  # MHA, head 256
    assert shared_read_tile("trtllm", gqa8, 4) == 256  # 8 heads per KV head x 4 beams = 32
    assert shared_read_tile("trtllm", qwen, 4) == 256  # 7 x 4 = 28 rows
    assert shared_read_tile("trtllm", mha128, 4) == 0  # vanilla MHA at head size 128
    assert shared_read_tile("trtllm", bloom, 4) == 0
    assert shared_read_tile("trtllm", gptj, 2) == 0  # XQA's beam kernel is width 4 only
    assert shared_read_tile("vllm", gptj, 4) == 0  # paged attention: per sequence


def test_xqa_beam_step_by_hand(gptj_trt):
    """GPT-J, 4 beams, TensorRT-LLM: after g steps a 1,000-token prompt's 3 whole 256-token
    tiles (768 tokens) are read once and the last 232 prompt tokens + g own tokens per
    beam; more than a prompt read once (P + 4 g), less than each beam reading it all."""
    c = gptj_trt
    eng = Engine(c)
    eng.add(Request(1, 0.0, prompt_tokens=1000, output_tokens=4, beams=4))
    steps = []
    while (s := eng.step()) is not None:
        steps.append(s.duration_s)
    want = [c.step_ms([1000], [0], []) / 1000]
    want += [c.step_ms([], [], [(768 + 4 * (232 + g)) / 4] * 4) / 1000 for g in (0, 1, 2)]
    assert steps == pytest.approx(want, rel=1e-12)
    cascade, per_beam = (c.step_ms([], [], [m] * 4) / 1000 for m in (1000 / 4, 1000))
    assert cascade < steps[1] < per_beam
    # a prompt of whole tiles is read once for all beams
    whole = Engine(c)
    whole.add(Request(2, 0.0, prompt_tokens=1024, output_tokens=2, beams=4))
    got = [s.duration_s for s in iter(whole.step, None)]
    assert got[1] == pytest.approx(c.step_ms([], [], [1024 / 4] * 4) / 1000, rel=1e-12)


def test_beam_kv_blocks_by_hand():
    """The prompt's blocks but the last are shared; each beam holds the last prompt block
    and its own tokens' blocks; one beam: the blocks of prompt + own tokens."""
    assert beam_kv_blocks(1000, 60, 4, 16) == 62 + 4 * 5  # 8 + 60 tokens in 5 blocks
    assert beam_kv_blocks(1024, 0, 4, 16) == 63 + 4  # a full last block is copied too
    assert beam_kv_blocks(1000, 60, 1, 16) == -(-1060 // 16)
    assert beam_kv_blocks(1, 0, 4, 16) == 4


def test_beam_request_larger_than_the_replica_is_refused(gptj_trt):
    """A beam request whose beams' blocks exceed one replica's KV is refused when added,
    naming the tokens it needs and the fix."""
    eng = Engine(gptj_trt)
    room = eng.request_kv_tokens
    eng.add(Request(0, 0.0, room // 2, room // 10, beams=4))  # 0.9 of the room
    with pytest.raises(InvalidInputError, match=r"needs [\d,]+ KV tokens, more than .* raise --tp"):
        eng.add(Request(1, 0.0, room // 2, room // 8 + 16, beams=4))


def test_mlperf_runs_gptj_with_its_beams_by_default():
    """`mlperf.offline_run` decodes GPT-J's samples with MLPerf's 4 beams unless told one
    sequence: fewer samples/s, the same samples; Llama-2 has no beams."""
    from servecast.simulator import search
    from servecast.simulator.mlperf import offline_run

    c = search.compile_replica(Deployment(model="gpt-j-6b", gpu="h100-sxm", dtype="fp8",
                                          kv_cache_dtype="fp8", engine="trtllm"))
    beams = offline_run(c, "mlperf-gptj", "gptj-99", replicas=64, min_duration_s=1.0)
    one = offline_run(c, "mlperf-gptj", "gptj-99", replicas=64, min_duration_s=1.0, beams=1)
    four = offline_run(c, "mlperf-gptj", "gptj-99", replicas=64, min_duration_s=1.0, beams=4)
    assert beams == four and beams["requests"] == one["requests"]
    assert 0 < beams["offline_rps"] < one["offline_rps"]
