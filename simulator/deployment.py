"""A serving deployment (model, GPU, TP, replicas, engine settings) compiled into what the
engine needs: the KV capacity in blocks and the iteration time of a batch.

The KV capacity comes from the step-time memory model (weights per GPU at the TP and dtype,
KV bytes per token, `gpu_memory_utilization` of the GPU's memory); the iteration time from
the step-time runtime for the actual batch (prefill chunks at their context offsets, decode
sequences at their context lengths), divided by the engine family's efficiency factor:

    duration_ms = step_ms(prefill, offsets, decode) / efficiency

`efficiency` is the engine-specific factor (ENGINE_EFFICIENCY gives each family's default,
1.0 = the step-time model as is; capacity planning fits it on development rows). The step
time includes the engine overhead the runtime fitted for the deployment's engine family
(`Runtime.overheads[engine]`, `servecast train step-time`); a runtime with none fitted for
that family adds its default instead (`Runtime.engine_overhead()`: the model's constant, else
its default engine's terms, else 0) and `Compiled.overhead_engine` says whose terms apply.
Without a saved step-time model the runtime is physics only (no learned residuals, no
overhead: 0 ms for every family).
Times in ms here; the engine converts to seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import exp, log, log1p
from pathlib import Path

import numpy as np

from servecast import gpus
from servecast.errors import InvalidInputError, UnknownNameError
from servecast.predictors.step_time.configs import load_config, shipped
from servecast.predictors.step_time.runtime import Runtime, describe_overhead, overhead_terms

#: engine families and their default efficiency (iteration time = step time / efficiency)
ENGINE_EFFICIENCY = {"vllm": 1.0, "sglang": 1.0, "trtllm": 1.0}
#: memory the timing engine assumes, so its KV check never refuses a batch whose shared
#: prefix blocks the simulator counts once (timing does not depend on the memory size)
_TIMING_MEM_GB = 1e9
#: bytes per KV value by `kv_cache_dtype` (the step-time memory model counts 2)
KV_BYTES = {"auto": 2, "fp8": 1}
#: engine families whose KV cache takes `gpu_memory_utilization` of the memory LEFT after the
#: weights, not of the whole memory: TensorRT-LLM's `kv_cache_free_gpu_mem_fraction` ("the
#: maximum fraction of GPU memory (after loading the model) that will be used for the KV
#: cache", default 0.90; docs/source/performance/perf-best-practices.md)
KV_OF_FREE_MEMORY = frozenset({"trtllm"})


@dataclass(frozen=True)
class Deployment:
    """One deployment: `replicas` copies of `model` (a shipped step-time config name or a
    config.json path) on `tp` GPUs `gpu` (catalog name or spec file) each.

    max_num_seqs: running requests per replica at most (vLLM's default 256)
    max_num_batched_tokens: tokens scheduled per iteration at most (prefill + decode)
    chunked_prefill: split long prompts over iterations and batch them with decodes (vLLM
      V1); off: an iteration either prefills whole prompts or decodes (vLLM V0)
    prefix_caching: reuse the KV of prompt blocks another request computed (by the trace's
      Mooncake-style `prefix_hashes`, one hash per `hash_block_tokens` prompt tokens)
    gpu_memory_utilization: share of GPU memory for weights + KV cache (vLLM, SGLang); for
      the families of KV_OF_FREE_MEMORY (trtllm) the share of the memory left after the
      weights that the KV cache takes (TensorRT-LLM's kv_cache_free_gpu_mem_fraction)
    block_size: tokens per KV block; efficiency: None = the engine family's default
    kv_cache_dtype: "auto" (the step-time memory model's 2-byte KV, vLLM's default) or
      "fp8" (1 byte per value: twice the KV tokens in the same memory; vLLM / TensorRT-LLM
      `kv_cache_dtype fp8`). Only the capacity changes: the step time still reads 2-byte KV.
    """

    model: str = "llama-3.1-8b"
    gpu: str = "l40s"
    tp: int = 1
    replicas: int = 1
    dtype: str = "bf16"
    engine: str = "vllm"
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    chunked_prefill: bool = True
    prefix_caching: bool = True
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    hash_block_tokens: int = 512
    efficiency: float | None = None
    kv_cache_dtype: str = "auto"

    def check(self) -> None:
        """InvalidInputError / UnknownNameError naming the field and the fix."""
        if self.engine not in ENGINE_EFFICIENCY:
            raise UnknownNameError(f"unknown engine {self.engine!r}; known engines: "
                                   f"{', '.join(ENGINE_EFFICIENCY)}")
        for name in ("tp", "replicas", "max_num_seqs", "max_num_batched_tokens", "block_size",
                     "hash_block_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise InvalidInputError(f"deployment {name}={v!r} must be a positive integer")
        if self.hash_block_tokens % self.block_size:
            raise InvalidInputError(
                f"hash_block_tokens={self.hash_block_tokens} must be a multiple of "
                f"block_size={self.block_size} (a prefix hash covers whole KV blocks)")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise InvalidInputError(f"gpu_memory_utilization={self.gpu_memory_utilization!r} "
                                    "must be in (0, 1] (vLLM's default 0.9)")
        if self.kv_cache_dtype not in KV_BYTES:
            raise InvalidInputError(f"kv_cache_dtype={self.kv_cache_dtype!r}: use one of "
                                    f"{', '.join(KV_BYTES)}")
        if self.efficiency is not None and not self.efficiency > 0:
            raise InvalidInputError(f"efficiency={self.efficiency!r} must be > 0 (1 = the "
                                    "step-time model as is)")

    def as_dict(self) -> dict:
        return asdict(self)


class Compiled:
    """A deployment compiled once: `kv_blocks` per replica, `memory` (the step-time memory
    model's numbers) and `step_ms(prefill, offsets, decode)` / `decode_ms(batch, means)`.
    `overhead` is the engine overhead in every step (`OVERHEAD_TERMS`), `overhead_engine` the
    engine family whose fitted terms those are: the deployment's own, the runtime's default
    engine when none was fitted for it, or None for the runtime's constant (0 ms physics
    only); `overhead_text()` says it in one line. `runtime` is the step-time runtime it was
    compiled with (None: physics only; `max_batch.tune` compiles the other caps with it)."""

    def __init__(self, dep: Deployment, runtime: Runtime | None = None):
        dep.check()
        rt = runtime or Runtime({}, [], {})
        try:
            cfg = load_config(dep.model)
        except UnknownNameError:
            raise UnknownNameError(f"unknown model {dep.model!r}; known models: "
                                   f"{', '.join(shipped())} (or a Hugging Face config.json "
                                   "path)") from None
        spec = rt.specs.get(dep.gpu) or _spec(dep.gpu)
        of_free = dep.engine in KV_OF_FREE_MEMORY
        family = dep.engine if dep.engine in rt.overheads else None  # None: the default
        self.overhead = overhead_terms(rt.engine_overhead(family))
        self.overhead_engine = rt.overhead_family(family)
        mem = rt.engine(cfg, spec, dep.tp, dep.dtype, engine=family,
                        mem_util=1.0 if of_free else dep.gpu_memory_utilization)
        timing = rt.engine(cfg, {**spec, "Dev_Mem": _TIMING_MEM_GB}, dep.tp, dep.dtype,
                           engine=family)
        self.deployment, self.config = dep, cfg
        self.runtime = runtime
        self.memory = mem.memory()
        if of_free:  # that share of what the weights leave (Deployment doc)
            self.memory["kv_capacity_tokens"] = int(dep.gpu_memory_utilization
                                                    * self.memory["kv_capacity_tokens"])
        if KV_BYTES[dep.kv_cache_dtype] != 2:
            ratio = 2 // KV_BYTES[dep.kv_cache_dtype]
            self.memory["kv_capacity_tokens"] *= ratio
            self.memory["kv_bytes_per_token"] /= ratio
        self.kv_blocks = self.memory["kv_capacity_tokens"] // dep.block_size
        if self.kv_blocks < 1:
            raise InvalidInputError(
                f"{cfg.name} on {dep.tp} x {dep.gpu}: {self.memory['kv_capacity_tokens']} KV "
                f"tokens left after {self.memory['weights_gib']:.1f} GiB of weights per GPU, "
                f"less than one {dep.block_size}-token block; raise --tp")
        self.efficiency = dep.efficiency or ENGINE_EFFICIENCY[dep.engine]
        self._engine = timing
        self.decode_ms = _vector_decode(timing, self.efficiency) or self._decode_loop
        self.batch_ms = _scalar_step(timing, self.efficiency) or self._batch_loop

    def overhead_text(self) -> str:
        """The engine overhead per step and whose it is, e.g. `1.7 ms + 0.078 ms per
        sequence (vllm's; none fitted for sglang)`."""
        want, got = self.deployment.engine, self.overhead_engine
        if got == want:
            return f"{describe_overhead(self.overhead)} (fitted for {want})"
        whose = f"{got}'s" if got else "the default constant"
        return f"{describe_overhead(self.overhead)} ({whose}; none fitted for {want})"

    def step_ms(self, prefill=(), offsets=None, decode=()) -> float:
        """ms of one iteration (see the module docstring)."""
        return self._engine.step_ms(prefill, offsets, decode) / self.efficiency

    def _decode_loop(self, batch: int, means: np.ndarray) -> np.ndarray:
        return np.array([self.step_ms((), None, [m] * batch) for m in means])

    def _batch_loop(self, prefill: list, offsets: list, decodes: int, context: int) -> float:
        return self.step_ms(prefill, offsets, [context / decodes] * decodes if decodes else ())


def _spec(gpu) -> dict:
    try:
        return gpus.resolve_spec(gpu)
    except UnknownNameError:
        raise UnknownNameError(f"unknown GPU {gpu!r}; known GPUs: "
                               f"{', '.join(gpus.catalog())} (or a spec file .json / .yaml)"
                               ) from None


def _vector_decode(eng, efficiency: float):
    """`decode_ms(batch, means)`: the ms of decode-only iterations of `batch` sequences at
    mean context lengths `means` (an array), vectorized from the engine's tables. Used only
    when it reproduces `step_ms` on probe batches (else None: one call per iteration)."""
    try:
        tab = eng.tables()
    except AttributeError:
        return None
    lt, lin, lm, lb, lc, dec, over, seq = (tab[k] for k in (
        "log_tokens", "log_linear_ms", "log_lm_head_ms", "log_batch", "log1p_context",
        "log_decode_ms", "overhead_ms", "seq_ms"))
    per_batch: dict = {}  # batch -> (ms of everything but decode attention, row, weight)

    def decode_ms(batch: int, means: np.ndarray) -> np.ndarray:
        got = per_batch.get(batch)
        if got is None:
            x = log(batch)
            i = min(max(int(np.searchsorted(lb, x)) - 1, 0), len(lb) - 2)
            fx = min(max((x - lb[i]) / (lb[i + 1] - lb[i]), 0.0), 1.0)
            base = exp(np.interp(x, lt, lin)) + exp(np.interp(x, lt, lm)) + over + seq * batch
            got = per_batch[batch] = (base, dec[i] * (1 - fx) + dec[i + 1] * fx)
        base, row = got
        y = np.log1p(means)
        j = np.searchsorted(lc, y) - 1
        np.maximum(j, 0, out=j)
        np.minimum(j, len(lc) - 2, out=j)
        fy = (y - lc[j]) / (lc[j + 1] - lc[j])
        np.maximum(fy, 0.0, out=fy)
        np.minimum(fy, 1.0, out=fy)
        return (base + np.exp(row[j] * (1 - fy) + row[j + 1] * fy)) / efficiency

    for batch in (1, 3, 64, 700):
        for mean in (0, 17, 1000, 40000):
            want = eng.step_ms((), None, [mean] * batch) / efficiency
            if abs(decode_ms(batch, np.array([float(mean)]))[0] - want) > 1e-9 * want:
                return None
    return decode_ms


def _scalar_step(eng, efficiency: float):
    """`batch_ms(prefill, offsets, decodes, context)`: `step_ms` of prefill chunks at their
    offsets and `decodes` sequences holding `context` KV tokens in all, in pure Python from
    the engine's tables (no arrays: the engine calls it every iteration). Used only when it
    reproduces `step_ms` on probe batches (else None)."""
    try:
        from servecast.predictors.step_time.runtime import bilinear as _bilinear
        from servecast.predictors.step_time.runtime import interp as _interp

        tab = eng.tables()
    except (ImportError, AttributeError):
        return None
    over, seq, tab = tab["overhead_ms"], tab["seq_ms"], tab["lists"]
    lt, lb, lc, lin, lm, dec, pre = (tab[k] for k in (
        "log_tokens", "log_batch", "log1p_context", "log_linear_ms", "log_lm_head_ms",
        "log_decode_ms", "log_prefill_ms"))

    def batch_ms(prefill: list, offsets: list, decodes: int, context: int) -> float:
        t = exp(_interp(lt, lin, log(sum(prefill) + decodes)))
        t += exp(_interp(lt, lm, log(len(prefill) + decodes)))
        if decodes:
            t += _bilinear(lb, lc, dec, log(decodes), log1p(context / decodes))
        for m, o in zip(prefill, offsets, strict=True):
            t += _bilinear(lt, lc, pre, log(m), log1p(o))
        return (t + over + seq * (len(prefill) + decodes)) / efficiency

    probes = [([], [], 1, 0), ([512], [0], 0, 0), ([300, 2048], [1024, 0], 40, 40 * 900),
              ([64] * 12, list(range(0, 1200, 100)), 7, 7000), ([8192], [50000], 255, 10**6)]
    for p, o, d, c in probes:
        want = eng.step_ms(p, o, [c / d] * d if d else ()) / efficiency
        if abs(batch_ms(p, o, d, c) - want) > 1e-9 * want:
            return None
    return batch_ms


def load_runtime(path: str | Path | None) -> Runtime | None:
    """The step-time runtime of a saved `step_time` model folder (None: physics only)."""
    return None if path is None else Runtime.load(path)
