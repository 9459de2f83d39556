"""Step-time runtime: numpy only (no duckdb, polars, lightgbm, torch, lightning).

`Runtime.load(dir)` reads the operator residual forests of a saved `step_time` model;
`Runtime.engine(model, gpu, tp, dtype)` compiles one serving configuration into tables of
operator time (ms per iteration) over a log grid of token counts, decode batch x context and
prefill chunk x context offset, each table entry = physics x exp(learned residual). A call,
`EngineStep.step_ms(prefill, prefill_offsets, decode)`, is then a handful of interpolations:
the simulator calls it every iteration.

Iteration time = layers x (GEMMs of T tokens (an MoE layer: `moe_layer_ms`, the router,
routing passes and experts' GEMMs over the routed tokens) + norms / activations + 2
all-reduces across TP + prefill attention of every chunk + decode attention of the decode
sequences) + lm_head of the sequences that produce a token + the engine overhead: a constant
`overhead_ms` (the saved model's, or a call's), else the terms fitted for `engine`
(`serving.fit_overheads`, per engine family; `OVERHEAD_TERMS`): `step_ms` per iteration (host
CPU), `ring_cycles` per all-reduce ring step (`ring_steps`: 2 all-reduces per layer x 2
(TP - 1) steps of a ring, in cycles of the GPU's boost clock, like the physics' launch floors)
and `seq_ms` per sequence in the batch (sampling, scheduling); else 0. Memory: weights, KV bytes
per token and the KV capacity in tokens at a memory utilization.
"""

from __future__ import annotations

from bisect import bisect_left
from math import ceil, exp, log, log1p
from pathlib import Path
from statistics import NormalDist

import numpy as np

from servecast import gpus
from servecast.errors import InvalidInputError
from servecast.predictors.operator_latency import physics
from servecast.predictors.operator_latency.runtime import Runtime as OperatorRuntime
from servecast.predictors.output_length.forest import Forest
from servecast.predictors.step_time.configs import ModelConfig, load_config

#: grids (log-spaced, integers) the tables are computed on
TOKENS = np.unique(np.round(np.geomspace(1, 131072, 160))).astype(float)
BATCH = np.unique(np.round(np.geomspace(1, 4096, 40))).astype(float)
CONTEXT = np.unique(np.concatenate([[0.0], np.round(np.geomspace(1, 262144, 48))]))
DTYPES = ("bf16", "fp8")
MEM_UTIL = 0.9  # vLLM's default gpu_memory_utilization
#: engine overhead terms (see the module docstring): per iteration (ms), per all-reduce ring
#: step (GPU clock cycles), per sequence of the batch (ms)
OVERHEAD_TERMS = ("step_ms", "ring_cycles", "seq_ms")


#: MoE routing imbalance: coefficient of variation of the experts' shares of the routed
#: tokens, the median over (domain, layer) of Mixtral-8x7B's top-2 counts in OLMoE's routing
#: data (`../shared/datasets/moe/olmoe_routing`; one value for every MoE model)
ROUTING_CV = 0.12
#: quantiles per expert of its routed-token count (`moe_layer_ms`'s expectation), and the
#: largest token count whose binomial quantiles are exact (normal approximation above)
LOAD_QUANTILES = 16
EXACT_LOADS = 256


def expert_shares(experts: int, cv: float) -> np.ndarray:
    """Each expert's share of the routed tokens (sums to 1): evenly spaced normal quantiles
    scaled to coefficient of variation `cv` (0: uniform), clipped at 0."""
    z = np.array([NormalDist().inv_cdf((e + 0.5) / experts) for e in range(experts)])
    shares = np.maximum(0.0, 1.0 + cv * z / z.std())
    return shares / shares.sum()


def expert_loads(tokens: np.ndarray, prob: np.ndarray, quantiles: int = LOAD_QUANTILES
                 ) -> np.ndarray:
    """(tokens, experts, quantiles) routed-token counts: the mid-quantiles (j + 0.5) /
    `quantiles` of Binomial(T, p) for each token count T of `tokens` and each expert's
    per-token routing probability p of `prob` (top-k x its share); exact up to
    `EXACT_LOADS` tokens, a rounded normal approximation (clipped to [0, T]) above."""
    u = (np.arange(quantiles) + 0.5) / quantiles
    p = np.clip(prob, 0.0, 1.0)[:, None]
    out = np.empty((len(tokens), len(prob), quantiles))
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, EXACT_LOADS + 1)))])
    z = np.array([NormalDist().inv_cdf(x) for x in u])
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, n in enumerate(np.asarray(tokens, dtype=np.int64)):
            if n <= EXACT_LOADS:
                m = np.arange(n + 1)
                logpmf = lf[n] - lf[m] - lf[n - m] + m * np.log(p) + (n - m) * np.log1p(-p)
                pmf = np.nan_to_num(np.exp(logpmf))  # p = 0 or 1: 0 * log 0 is NaN
                pmf = np.where(p == 0.0, m == 0, np.where(p == 1.0, m == n, pmf))
                cdf = np.cumsum(pmf, axis=1)
                out[i] = (cdf[:, :, None] < u * cdf[:, -1:, None]).sum(axis=1)
            else:
                mean, sd = n * p, np.sqrt(n * p * (1.0 - p))
                out[i] = np.clip(np.round(mean + sd * z), 0, n)
    return out


def moe_layer_ms(rt, spec: dict, dtype: str, tokens: np.ndarray, experts: int, top_k: int,
                 hidden: int, inter: int, up: int, routing_cv: float = ROUTING_CV
                 ) -> np.ndarray:
    """ms of one MoE layer at each token count of `tokens` (per GPU: `inter` and `up` are
    the expert's TP-sharded intermediate and up-projection widths), as vLLM's fused_moe and
    TensorRT-LLM's MoE plugin run it:
    - the router GEMM (T x hidden -> experts; kept in bf16 in fp8 checkpoints) and the
      top-k softmax, the routing sort / block alignment and the gather of every token to
      its k experts and the weighted combine back (memory-bound: T x hidden read + T x k x
      hidden written, and the reverse), each a launch;
    - each expert's up and down GEMMs on its routed tokens, in expectation over the
      routing: expert e gets Binomial(T, k x share_e) tokens (`expert_loads`, shares of
      `expert_shares(experts, routing_cv)`), an expert with none is skipped, each expert's
      GEMM is the operator model's GEMM at its M (its own tiles, waves and launch floor;
      one floor per grouped GEMM instead was scored on the development rows and not kept:
      docs/results.md, issue 24, h-moe);
    - the gated activation on the T x k routed rows.
    """
    T = np.asarray(tokens, dtype=np.float64)
    mem = spec["Mem_Bw"] * 1e9
    act = 3.0 * inter * top_k * T * 2.0 / mem * 1e3
    moves = 2.0 * (T * hidden + T * top_k * hidden) * 2.0 / mem * 1e3
    router = rt.op_ms("gemm", spec, dtype="bf16", M=T, N=experts, K=hidden)
    side = router + act + moves + 4 * physics.LAUNCH_MS
    grid = np.log(TOKENS)
    gemm = np.log(rt.op_ms("gemm", spec, dtype=dtype, M=TOKENS, N=up, K=hidden)
                  + rt.op_ms("gemm", spec, dtype=dtype, M=TOKENS, N=hidden, K=inter))
    prob = top_k * expert_shares(experts, routing_cv)
    loads = expert_loads(np.round(T), prob)
    per = np.where(loads > 0, np.exp(np.interp(np.log(np.maximum(loads, 1.0)), grid, gemm)),
                   0.0)
    return side + per.mean(axis=2).sum(axis=1)


def ring_steps(layers: int, tp: int) -> int:
    """All-reduce ring steps of one iteration: 2 all-reduces per layer (attention output,
    MLP output), each 2 (tp - 1) steps of a ring (reduce-scatter + all-gather); 0 at TP 1."""
    return 4 * layers * (tp - 1)


def overhead_terms(value) -> dict[str, float]:
    """An engine overhead as its `OVERHEAD_TERMS` (a number = `step_ms` alone);
    InvalidInputError on an unknown term or a value that is not a number >= 0."""
    terms = {"step_ms": value} if not isinstance(value, dict) else dict(value)
    unknown = set(terms) - set(OVERHEAD_TERMS)
    if unknown:
        raise InvalidInputError(f"unknown overhead term(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(OVERHEAD_TERMS)}")
    for k, v in terms.items():
        if not isinstance(v, int | float) or isinstance(v, bool) or not v >= 0:
            raise InvalidInputError(f"overhead term {k}={v!r} must be a number >= 0")
    return {k: float(terms.get(k, 0.0)) for k in OVERHEAD_TERMS}


def describe_overhead(value) -> str:
    """One line of an engine overhead's terms, e.g. `1.0 ms + 5000 cycles per all-reduce
    ring step + 0.05 ms per sequence` (zero terms left out)."""
    t = overhead_terms(value)
    parts = [f"{t['step_ms']:.1f} ms"]
    if t["ring_cycles"]:
        parts.append(f"{t['ring_cycles']:.0f} cycles per all-reduce ring step")
    if t["seq_ms"]:
        parts.append(f"{t['seq_ms']:.2g} ms per sequence")
    return " + ".join(parts)


class Runtime(OperatorRuntime):
    """The fitted operator residuals (one forest per op), their feature view and the
    engines' overheads: `overheads` maps an engine family to its fitted `OVERHEAD_TERMS`;
    `overhead_ms` is the default constant (ms per iteration; None: the terms of
    `overheads[default_engine]`, else 0)."""

    kind = "step_time"

    def __init__(self, forests: dict[str, Forest], columns: list[int], specs: dict | None = None,
                 overhead_ms: float | None = 0.0, overheads: dict[str, float] | None = None,
                 default_engine: str = "vllm"):
        super().__init__(forests, columns, specs)
        self.overheads = {str(k): overhead_terms(v) for k, v in (overheads or {}).items()}
        self.default_engine = default_engine
        self.overhead_ms = None if overhead_ms is None else float(overhead_ms)
        self._engines: dict = {}

    @classmethod
    def _from_parts(cls, parts: OperatorRuntime, card: dict) -> Runtime:
        from servecast.errors import ModelVersionError

        params = card.get("params") or {}
        overhead = params.get("overhead_ms", 0.0)
        fitted = card.get("engine_overheads") or {}
        values = [overhead] if overhead is not None else []
        try:
            if not isinstance(fitted, dict):
                raise ValueError("not a mapping")
            for v in [*values, *fitted.values()]:
                overhead_terms(v)
        except ValueError as e:
            raise ModelVersionError(f"model card: params.overhead_ms={overhead!r} / "
                                    f"engine_overheads={fitted!r}: {e} (numbers >= 0 or "
                                    f"{', '.join(OVERHEAD_TERMS)} terms); retrain the model"
                                    ) from None
        return cls(parts.forests, parts.columns, parts.specs, overhead, fitted,
                   params.get("default_engine", "vllm"))

    def engine_overhead(self, engine: str | None = None) -> float | dict[str, float]:
        """Overhead of engine family `engine` (its fitted `OVERHEAD_TERMS`; None: the
        default constant `overhead_ms`, else the default engine's terms, else 0);
        UnknownNameError listing the fitted families."""
        if engine is not None and engine not in self.overheads:
            from servecast.errors import UnknownNameError

            raise UnknownNameError(
                f"no engine overhead fitted for {engine!r}; fitted: "
                f"{', '.join(self.overheads) or 'none (retrain with serving rows)'}")
        family = self.overhead_family(engine)
        if family is not None:
            return self.overheads[family]
        return 0.0 if self.overhead_ms is None else self.overhead_ms

    def overhead_family(self, engine: str | None = None) -> str | None:
        """The engine family whose fitted terms `engine_overhead(engine)` gives (`engine`: a
        fitted family or None); None when it gives the constant `overhead_ms` or 0."""
        if engine is not None:
            return engine
        if self.overhead_ms is None and self.default_engine in self.overheads:
            return self.default_engine
        return None

    def predict(self, frame) -> dict[str, np.ndarray]:
        """`step_ms` of one batch per row of `frame` (columns model, gpu, prefill, decode;
        optional tp, dtype, prefill_offsets, overhead_ms, engine)."""
        missing = [c for c in ("model", "gpu", "prefill", "decode") if c not in frame]
        if missing:
            raise InvalidInputError(f"step-time frame lacks column(s) {', '.join(missing)}")
        cols = {c: _values(frame[c]) for c in ("model", "gpu", "prefill", "decode", "tp",
                                               "dtype", "prefill_offsets", "overhead_ms",
                                               "engine")
                if c in frame}
        n = len(cols["model"])
        out = np.empty(n)
        for i in range(n):
            row = {c: v[i] for c, v in cols.items()}
            overhead = row.get("overhead_ms")
            if overhead is None and row.get("engine") is not None:
                overhead = self.engine_overhead(row["engine"])
            out[i] = self.step_time(row["model"], row["gpu"], row["prefill"] or (),
                                    row.get("prefill_offsets"), row["decode"] or (),
                                    tp=int(row.get("tp") or 1), dtype=row.get("dtype") or "bf16",
                                    overhead_ms=overhead)
        return {"step_ms": out}

    def engine(self, model: str | Path | dict | ModelConfig, gpu, tp: int = 1,
               dtype: str = "bf16", overhead_ms: float | dict | None = None,
               mem_util: float = MEM_UTIL, engine: str | None = None) -> EngineStep:
        """The compiled step-time function of one serving configuration (cached);
        `overhead_ms` (ms per iteration, or `OVERHEAD_TERMS`) None: the overhead fitted for
        engine family `engine` (None: the model's default)."""
        overhead = overhead_terms(self.engine_overhead(engine) if overhead_ms is None
                                  else overhead_ms)
        key = (str(model), str(gpu), tp, dtype, tuple(overhead.values()), mem_util)
        if key not in self._engines or not isinstance(model, str | Path):
            cfg = model if isinstance(model, ModelConfig) else load_config(model)
            spec = self.specs.get(str(gpu)) if isinstance(gpu, str) else None
            spec = gpus.resolve_spec(spec or gpu)
            self._engines[key] = EngineStep(self, cfg, spec, tp, dtype, overhead, mem_util)
        return self._engines[key]

    def step_time(self, model, gpu, prefill=(), prefill_offsets=None, decode=(), tp: int = 1,
                  dtype: str = "bf16", overhead_ms: float | dict | None = None) -> float:
        """ms of one iteration (see EngineStep.step_ms); `overhead_ms` None: the model's."""
        return self.engine(model, gpu, tp, dtype, overhead_ms).step_ms(
            prefill, prefill_offsets, decode)


class EngineStep:
    """One (model, GPU, TP, dtype) compiled to interpolation tables; `step_ms` per batch.
    The engine overhead (a number: ms per iteration, or `OVERHEAD_TERMS`) compiles to
    `overhead_ms` per iteration and `seq_ms` per sequence of the batch; `routing_cv` is
    the MoE routing imbalance (`moe_layer_ms`; no effect on a dense model)."""

    def __init__(self, rt: Runtime, cfg: ModelConfig, spec: dict, tp: int, dtype: str,
                 overhead: float | dict, mem_util: float, routing_cv: float = ROUTING_CV):
        if dtype not in DTYPES:
            raise InvalidInputError(f"unknown dtype {dtype!r}; known dtypes: "
                                    f"{', '.join(DTYPES)}")
        if not isinstance(tp, int) or tp < 1:
            raise InvalidInputError(f"tp={tp!r} must be a positive integer")
        if cfg.heads % tp:
            raise InvalidInputError(
                f"{cfg.name}: tensor parallelism {tp} does not divide its {cfg.heads} attention "
                f"heads; use a TP among {', '.join(str(d) for d in _divisors(cfg.heads))}")
        if cfg.kv_heads % tp and tp % cfg.kv_heads:
            raise InvalidInputError(
                f"{cfg.name}: tensor parallelism {tp} neither divides nor is a multiple of its "
                f"{cfg.kv_heads} KV heads")
        gpus.require(spec, ["Dev_Mem", "Mem_Bw", "Num_Sm", "L2Cache", "TensorFLOPs", "SingleFLOPs"]
                     + ([gpus.dtype_flops_key(dtype)] if dtype != "bf16" else [])
                     + (["Interconnect_Bw"] if tp > 1 else []), f"{dtype} step time at TP {tp}")
        if not 0 < mem_util <= 1:
            raise InvalidInputError(f"mem_util={mem_util!r} must be in (0, 1]")
        self.cfg, self.spec, self.tp, self.dtype = cfg, spec, tp, dtype
        if not 0 <= routing_cv < 10:
            raise InvalidInputError(f"routing_cv={routing_cv!r} must be in [0, 10)")
        self.routing_cv = float(routing_cv)
        terms = overhead_terms(overhead)
        ring = ring_steps(cfg.layers, tp) * terms["ring_cycles"]
        if ring:
            gpus.require(spec, ["Freq"], "the all-reduce ring overhead")
            ring /= spec["Freq"] * 1e3
        self.overhead_ms = terms["step_ms"] + ring
        self.seq_ms = terms["seq_ms"]
        self.heads = cfg.heads // tp
        self.kv_heads = max(1, cfg.kv_heads // tp)
        self.inter = ceil(cfg.intermediate / tp)
        self.vocab = ceil(cfg.vocab / tp)
        self._memory(mem_util)
        self._tables(rt)

    # -- memory model ------------------------------------------------------------------------
    def _memory(self, mem_util: float) -> None:
        cfg, wbytes = self.cfg, physics.BYTES[self.dtype]
        self.weight_bytes = cfg.params() * wbytes / self.tp
        #: KV bytes per token on one GPU (bf16 cache): K and V of every layer
        self.kv_bytes_per_token = 2.0 * cfg.layers * self.kv_heads * cfg.head_dim * 2.0
        free = self.spec["Dev_Mem"] * 2**30 * mem_util - self.weight_bytes
        self.kv_capacity_tokens = int(max(0.0, free) // self.kv_bytes_per_token)
        if self.kv_capacity_tokens <= 0:
            raise InvalidInputError(
                f"{cfg.name} ({self.weight_bytes / 2**30:.1f} GiB of {self.dtype} weights per "
                f"GPU at TP {self.tp}) does not fit {self.spec['Device']}'s "
                f"{self.spec['Dev_Mem']:g} GB at memory utilization {mem_util}; raise TP")

    def memory(self) -> dict:
        """Weights (GiB per GPU), KV bytes per token (per GPU) and the KV capacity (tokens)."""
        return {"weights_gib": self.weight_bytes / 2**30,
                "kv_bytes_per_token": self.kv_bytes_per_token,
                "kv_capacity_tokens": self.kv_capacity_tokens}

    # -- tables ------------------------------------------------------------------------------
    def _tables(self, rt: Runtime) -> None:
        cfg, spec, T = self.cfg, self.spec, TOKENS
        hd, h, kvh, hid = cfg.head_dim, self.heads, self.kv_heads, cfg.hidden
        # per-layer GEMMs at T tokens: qkv, o, MLP up (+gate), down (MoE: `moe_layer_ms`)
        gemm = [((h + 2 * kvh) * hd, hid, T), (hid, h * hd, T)]
        up = (2 if cfg.gated_mlp else 1) * self.inter
        if cfg.experts == 1:
            gemm += [(up, hid, T), (hid, self.inter, T)]
        layer = np.zeros_like(T)
        for n, k, m in gemm:
            layer += rt.op_ms("gemm", spec, dtype=self.dtype, M=m, N=n, K=k)
        # norms, residual adds, activation: memory-bound passes over the activations (an
        # MoE's activation runs on the routed tokens: `moe_layer_ms`)
        act = 3.0 * self.inter if cfg.experts == 1 else 0.0
        layer += T * (8.0 * hid + act) * 2.0 / (spec["Mem_Bw"] * 1e9) * 1e3 \
            + 4 * physics.LAUNCH_MS
        if cfg.experts > 1:
            layer += moe_layer_ms(rt, spec, self.dtype, T, cfg.experts, cfg.experts_per_token,
                                  hid, self.inter, up, self.routing_cv)
        allreduce = 2 * rt.op_ms("allreduce", spec, N=T * hid, tp=self.tp) if self.tp > 1 \
            else np.zeros_like(T)
        self._ar = (cfg.layers * allreduce).tolist()  # ms over all layers, for `breakdown`
        self._lin = np.log(cfg.layers * (layer + allreduce))
        self._lm = np.log(rt.op_ms("gemm", spec, dtype=self.dtype, M=T, N=self.vocab, K=hid))
        attn = {"H": h, "kv_heads": kvh, "head_dim": hd}
        b, c = np.meshgrid(BATCH, CONTEXT, indexing="ij")
        dec = rt.op_ms("attn_decode", spec, B=b.ravel(), M=1, N=c.ravel(), **attn)
        self._dec = np.log(cfg.layers * dec).reshape(b.shape)
        m, c = np.meshgrid(T, CONTEXT, indexing="ij")
        pre = rt.op_ms("attn_prefill", spec, B=1, M=m.ravel(), N=c.ravel(), **attn)
        self._pre = np.log(cfg.layers * pre).reshape(m.shape)
        self._lt, self._lb, self._lc = np.log(T), np.log(BATCH), np.log1p(CONTEXT)
        # plain lists: scalar lookups in pure Python beat numpy's per-call overhead
        self._l = [a.tolist() for a in (self._lt, self._lb, self._lc, self._lin, self._lm)]
        self._dec_l, self._pre_l = self._dec.tolist(), self._pre.tolist()

    def tables(self) -> dict:
        """The interpolation tables `step_ms` reads, for callers that evaluate many batches
        from them at once (the simulator's fast paths). Axes: `log_tokens` (log of tokens
        in the step), `log_batch` (log of decode sequences), `log1p_context` (log of 1 +
        context tokens). Values, log ms over all layers: `log_linear_ms` (everything but
        attention and the LM head) and `log_lm_head_ms` over log_tokens, `log_decode_ms`
        (log_batch x log1p_context) and `log_prefill_ms` (one chunk: log_tokens x
        log1p_context); `overhead_ms` (ms per step) and `seq_ms` (ms per sequence of the
        batch). numpy arrays; the same under `lists` as plain lists (faster scalar lookups
        with `interp` / `bilinear`). Read-only."""
        return {"log_tokens": self._lt, "log_batch": self._lb, "log1p_context": self._lc,
                "log_linear_ms": self._lin, "log_lm_head_ms": self._lm,
                "log_decode_ms": self._dec, "log_prefill_ms": self._pre,
                "overhead_ms": self.overhead_ms, "seq_ms": self.seq_ms,
                "lists": {"log_tokens": self._l[0], "log_batch": self._l[1],
                          "log1p_context": self._l[2], "log_linear_ms": self._l[3],
                          "log_lm_head_ms": self._l[4], "log_decode_ms": self._dec_l,
                          "log_prefill_ms": self._pre_l}}

    # -- the call ----------------------------------------------------------------------------
    def step_ms(self, prefill=(), prefill_offsets=None, decode=()) -> float:
        """ms of one iteration: `prefill` chunk lengths (tokens) with their `prefill_offsets`
        (tokens already in the KV cache; default 0) and the context lengths of the `decode`
        sequences (one new token each). Raises InvalidInputError on an empty batch, negative
        lengths, or more KV tokens than fit (`memory()['kv_capacity_tokens']`)."""
        return sum(self._terms(prefill, prefill_offsets, decode))

    def breakdown(self, prefill=(), prefill_offsets=None, decode=()) -> dict[str, float]:
        """`step_ms` of the same batch split into its parts, ms each, summing to it:
        `linear` (every layer's GEMMs, norms, activation and MoE experts), `allreduce` (the
        two per layer across TP; 0 at TP 1), `lm_head`, `attn_prefill`, `attn_decode` and
        `overhead` (the engine's, per step and per sequence)."""
        p = np.asarray(prefill, dtype=np.float64).reshape(-1)
        d = np.asarray(decode, dtype=np.float64).reshape(-1)
        lin, lm, dec, pre, over = self._terms(prefill, prefill_offsets, decode)
        ar = _interp(self._l[0], self._ar, log(float(p.sum()) + d.size))
        return {"linear": lin - ar, "allreduce": ar, "lm_head": lm, "attn_prefill": pre,
                "attn_decode": dec, "overhead": over}

    def _terms(self, prefill, prefill_offsets, decode) -> tuple[float, ...]:
        """(linear with all-reduce, LM head, decode attention, prefill attention, overhead)
        ms of a batch, checked as `step_ms` says."""
        p = np.asarray(prefill, dtype=np.float64).reshape(-1)
        d = np.asarray(decode, dtype=np.float64).reshape(-1)
        off = np.zeros_like(p) if prefill_offsets is None else \
            np.asarray(prefill_offsets, dtype=np.float64).reshape(-1)
        if off.shape != p.shape:
            raise InvalidInputError(f"prefill_offsets has {off.size} values for {p.size} "
                                    "prefill chunks")
        if p.size + d.size == 0:
            raise InvalidInputError("empty batch: give prefill chunk lengths or decode contexts")
        if (p.size and (p.min() < 1 or off.min() < 0)) or (d.size and d.min() < 0):
            raise InvalidInputError("prefill chunks must be >= 1 token, offsets and decode "
                                    "contexts >= 0")
        kv = p.sum() + off.sum() + d.sum() + d.size
        if kv > self.kv_capacity_tokens:
            raise InvalidInputError(
                f"the batch holds {int(kv):,} KV tokens, over the "
                f"{self.kv_capacity_tokens:,}-token KV capacity of {self.cfg.name} on "
                f"{self.spec['Device']} at TP {self.tp}; split the batch or raise TP")
        lt, lb, lc, lin, lm = self._l
        dec = _bilinear(lb, lc, self._dec_l, log(d.size), log1p(float(d.mean()))) \
            if d.size else 0.0
        if p.size <= 8:
            pre = 0.0
            for m, o in zip(p.tolist(), off.tolist(), strict=True):
                pre += _bilinear(lt, lc, self._pre_l, log(m), log1p(o))
        else:
            pre = _bilinear_many(self._lt, self._lc, self._pre, np.log(p), np.log1p(off))
        return (exp(_interp(lt, lin, log(float(p.sum()) + d.size))),
                exp(_interp(lt, lm, log(p.size + d.size))), dec, pre,
                self.overhead_ms + self.seq_ms * (p.size + d.size))


def _interp(xs: list, ys: list, x: float) -> float:
    """Linear interpolation of (xs, ys) at x, clamped to the ends (scalar np.interp)."""
    i = min(max(bisect_left(xs, x) - 1, 0), len(xs) - 2)
    f = min(max((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0), 1.0)
    return ys[i] + f * (ys[i + 1] - ys[i])


def _bilinear(xs: list, ys: list, table: list, x: float, y: float) -> float:
    """exp of the bilinear interpolation of log-table `table` (xs x ys) at (x, y), clamped."""
    i = min(max(bisect_left(xs, x) - 1, 0), len(xs) - 2)
    j = min(max(bisect_left(ys, y) - 1, 0), len(ys) - 2)
    fx = min(max((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0), 1.0)
    fy = min(max((y - ys[j]) / (ys[j + 1] - ys[j]), 0.0), 1.0)
    r0, r1 = table[i], table[i + 1]
    top = r0[j] * (1 - fy) + r0[j + 1] * fy
    bot = r1[j] * (1 - fy) + r1[j + 1] * fy
    return exp(top * (1 - fx) + bot * fx)


def _bilinear_many(xs: np.ndarray, ys: np.ndarray, table: np.ndarray, x: np.ndarray,
                   y: np.ndarray) -> float:
    """Sum over the points (x, y) of `_bilinear` (vectorized)."""
    i = np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2)
    j = np.clip(np.searchsorted(ys, y) - 1, 0, len(ys) - 2)
    fx = np.clip((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0, 1.0)
    fy = np.clip((y - ys[j]) / (ys[j + 1] - ys[j]), 0.0, 1.0)
    top = table[i, j] * (1 - fy) + table[i, j + 1] * fy
    bot = table[i + 1, j] * (1 - fy) + table[i + 1, j + 1] * fy
    return float(np.exp(top * (1 - fx) + bot * fx).sum())


#: the scalar lookups of `step_ms`, public for `EngineStep.tables` callers:
#: interp(xs, ys, x) and bilinear(xs, ys, table, x, y) (exp of the log-table's value)
interp, bilinear = _interp, _bilinear


def _values(column) -> list:
    """A frame column (polars Series, numpy array or list) as a list of Python values."""
    return column.to_list() if hasattr(column, "to_list") else list(column)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0 and d <= 16]
