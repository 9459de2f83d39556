"""MLPerf's benchmark workloads as named workloads (`workload:NAME` of `servecast simulate`,
`--workload NAME` of `servecast capacity / plan`), registered into
`simulator.workloads` beside `sharegpt` (imported by it: import that module).

Each keeps the joint shape of the real ShareGPT prompt / decode token-count pairs of the
shared data (`llm/length_stats/sharegpt_8k_filtered_stats_llama2_tokenizer.csv`, Llama-2
tokenizer; pairs drawn together) and imposes what MLCommons' reference implementation
publishes for the benchmark's dataset (`mlcommons/inference`, `language/<benchmark>/`;
docs/results.md quotes each number and file): the input limit and output bounds, and where
published the mean output length (`tokens_per_sample`). The shape is scaled so that its
mean after clipping is the published one; draws are then clipped and rounded. MLPerf
publishes no input-length mean for OpenOrca (the shape's prompts, clipped at the limit,
stand in). GPT-J's lengths are published in words and characters only, and converted to
BPE tokens (`benchmarks/mlperf_gptj_lengths.py`, docs/results.md "GPT-J's MLPerf lengths
in BPE tokens"): the input mean is CNN/DailyMail's article length, 781 PTB word tokens (See
et al., ACL 2017), times BPE tokens per word, plus the BPE tokens of MLPerf's instruction
template (`language/gpt-j/dataset.py`, `download_cnndm.py`); the output mean is the
reference run's GEN_LEN, 4,016,878 characters of generated summaries over the 13,368
samples (`tools/submission/submission_checker.py`, summed by `language/gpt-j/
evaluation.py`), over characters per BPE token. Nothing here is fitted to MLPerf results.
Lengths in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servecast.config import data_dir
from servecast.simulator.workloads import Workload, get, pairs, register


@dataclass(frozen=True)
class Published:
    """What a benchmark's reference implementation publishes; None keeps the shape's own."""

    name: str
    dataset: str  # what the benchmark's requests are
    source: str  # where the numbers come from
    samples: int | None = None  # the benchmark's dataset size
    input_max: int | None = None
    input_mean: float | None = None
    output_min: int = 1
    output_max: int | None = None
    output_mean: float | None = None


MLPERF: dict[str, Published] = {w.name: w for w in [
    Published("mlperf-llama2-70b", "OpenOrca GPT-4 part, 24,576 samples (MLPerf Llama-2-70B)",
              "mlcommons/inference language/llama2-70b/README.md: --seqlen_limit=1024, "
              "--num_total_samples=24576, 'Tokens per sample: 294.45'; max_new_tokens 1024",
              samples=24576, input_max=1024, output_max=1024, output_mean=294.45),
    Published("mlperf-mixtral-8x7b",
              "OpenOrca + GSM8K + MBXP, 5,000 each (MLPerf Mixtral-8x7B)",
              "mlcommons/inference language/mixtral-8x7b/README.md: 5K samples from each of 3 "
              "datasets, tokens_per_sample 144.84; SUT.py: max_seq_len 1024, max_new_tokens "
              "1024, min_new_tokens 2",
              samples=15000, input_max=1024, output_min=2, output_max=1024,
              output_mean=144.84),
    Published("mlperf-gptj", "CNN/DailyMail validation, 13,368 samples (MLPerf GPT-J)",
              "mlcommons/inference language/gpt-j/README.md (13368 samples), backend.py: "
              "model_max_length 1919, max_new_tokens 128, min_new_tokens 30; input mean: "
              "781 PTB word tokens per article (See et al., ACL 2017) x BPE tokens per "
              "word + the instruction template's tokens (dataset.py PROMPT_DICT, "
              "download_cnndm.py); output mean: GEN_LEN 4,016,878 characters / 13,368 "
              "samples (tools/submission/submission_checker.py gptj-99, evaluation.py) / "
              "characters per BPE token; conversion: benchmarks/mlperf_gptj_lengths.py",
              samples=13368, input_max=1919, input_mean=878.0, output_min=30, output_max=128,
              output_mean=60.3),
]}


def _scale(x: np.ndarray, lo: float, hi: float | None, mean: float | None) -> float:
    """The factor that makes `x`, clipped to [lo, hi], average `mean` (fixed point)."""
    if mean is None:
        return 1.0
    scale = mean / x.mean()
    for _ in range(50):
        got = _clip(x, scale, lo, hi).mean()
        if abs(got - mean) < 1e-4 * mean:
            break
        scale *= mean / got
    return scale


def _clip(x: np.ndarray, scale: float, lo: float, hi: float | None) -> np.ndarray:
    return np.clip(x * scale, lo, np.inf if hi is None else hi)


def _drawer(w: Published):
    def draw(prompt: np.ndarray, output: np.ndarray, pick: np.ndarray):
        sp = _scale(prompt, 1, w.input_max, w.input_mean)
        so = _scale(output, w.output_min, w.output_max, w.output_mean)
        return (_clip(prompt[pick], sp, 1, w.input_max),
                _clip(output[pick], so, w.output_min, w.output_max))
    return draw


for _w in MLPERF.values():
    register(Workload(_w.name, _w.dataset, _w.source, _drawer(_w)))


def longest(name: str) -> int:
    """The longest request (prompt + output tokens) workload `name` can draw."""
    w = MLPERF.get(name)
    if w is not None and w.input_max and w.output_max:
        return w.input_max + w.output_max
    get(name)
    prompt, output = pairs(data_dir())
    return int((prompt + output).max())
