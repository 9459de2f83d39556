"""The step-wise serving engine: one replica, vLLM-like, iteration by iteration.

    eng = Engine(Compiled(Deployment(model="llama-3.1-8b", gpu="l40s")), policy="fcfs")
    eng.add(Request(request_id=1, arrival_s=0.0, prompt_tokens=512, output_tokens=64))
    step = eng.step()   # Step(start_s, duration_s, first_token_ids, token_ids, finished_ids,
                        #      preempted_ids, prefill_tokens, batch) or None when idle

`step()` runs one iteration starting at `eng.now` (an idle engine first jumps to the
earliest waiting arrival) and advances `eng.now` by its duration; every request in
`token_ids` emitted one token at `start_s + duration_s`. A real-time driver (the emulator)
adds requests as they arrive and sleeps `duration_s` per step; the batch simulation drives
the same engine from a trace.

One iteration = named steps: `_schedule` (running requests first: one decode token each or
their next prefill chunk, allocating KV blocks and preempting by recompute when blocks run
out; then, if nothing was preempted, `_admit` waiting requests in policy order within
`max_num_seqs`, the token budget `max_num_batched_tokens`, the free blocks minus the
`watermark` share and, for `kv_p90`, the predicted-p90 KV reservation), `_time` (the step-time
runtime on the actual batch) and `_advance` (tokens, first tokens, prefix-cache
registration, finishes). Without chunked prefill an iteration either prefills whole
prompts (when any waiting request fits) or decodes (vLLM V0).

KV is counted in blocks of `block_size` tokens. With prefix caching a request's leading
prompt blocks whose `prefix_hashes` (one per `hash_block_tokens`, Mooncake's `hash_ids`) are
cached are reused (at least one prompt token is always computed); a finished or preempted
request's hashed blocks stay cached until evicted, least recently released first. A
preempted request frees all its blocks and later prefills its prompt and the tokens it had
generated again (recompute); the victim is the running request of the lowest priority
(largest policy key), ties the most recently admitted.

Beam search (`Request.beams` = B > 1, e.g. MLPerf's GPT-J with 4 beams), as the engines'
code does it (docs/results.md, "Beam search as the engines run it"):
- the prompt is prefilled once; each decode iteration then runs B sequences (B tokens of
  the budget, B decodes of the step time) for `output_tokens` iterations, the length of the
  returned beam, whose tokens are the request's (counted once);
- KV held (`beam_kv_blocks`): the prompt's blocks but its last one are shared by the beams;
  each beam holds its own copy of the prompt's last block and the blocks of its own tokens
  (NVIDIA/TensorRT-LLM `cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp`: context
  blocks `allocateBlock(..., shareAmongBeams=true)` but the last, which is shared only
  when the beam width is 1, as is every generation block; vllm-project/vllm
  `vllm/core/block_manager_v1.py`: `fork` shares every block, `append_slots` copies a
  shared last block on write, so vLLM differs by at most one block per beam);
- KV read by decode attention (`shared_read_tile`): in vLLM's paged attention and in
  TensorRT-LLM's masked MHA kernel each beam is its own sequence and reads the whole
  context, P + g KV tokens per beam for a P-token prompt after g steps
  (`decoderMaskedMultiheadAttentionTemplate.h`: one CTA per batch x beam row looping over
  every timestep; the prompt's KV is beam 0's, "all beams share the same context kv
  cache"); TensorRT-LLM's XQA kernel (`cpp/kernels/xqa/mha.cu`, `BEAM_WIDTH > 1`) puts
  all beams of a request in one CTA and loads the context's whole CTA tiles
  (XQA_TILE_TOKENS) once for all beams ("converged" tiles) and the rest, the prompt's last
  partial tile and the beams' own tokens, per beam: T floor(P / T) + B (P - T floor(P / T)
  + g). TensorRT-LLM runs XQA for a beam request when its JIT kernel takes the shape
  (`decoderXQAImplJIT/kernelUtils.cpp` `supportConfigHMMA`: beam width 1 or 4, head size
  a multiple of 16 up to 256, heads per KV head x beams <= 32, and no vanilla multi-head
  attention at head sizes <= 128; SM 80 or newer, which every NVIDIA GPU of the catalog
  is), else masked MHA;
- not modelled: the beam-search sampling kernels and the cache-indirection update per
  step (B x vocabulary logits and B x context indices per request: for GPT-J's 4 beams
  under 1% of the KV bytes its attention reads), and the steps a search runs past the
  returned beam's length (with `early_stopping` it ends when B hypotheses are finished,
  `cpp/tensorrt_llm/kernels/beamSearchKernels/beamSearchKernelsTemplate.h`).
Times in seconds, lengths in tokens.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from math import inf

import numpy as np

from servecast.errors import InvalidInputError
from servecast.simulator.deployment import Compiled
from servecast.simulator.policies import ENGINE_POLICIES, priority_key, reservation

#: KV tokens per CTA tile of TensorRT-LLM's XQA decode kernel (`cpp/kernels/xqa/mha.cu`:
#: `ctaTile.x` = `warpTile.x` 64 x `ctaShapeInWarps.x` 4); with beams, the prompt's whole
#: tiles are read once for all the beams of a request (module doc)
XQA_TILE_TOKENS = 256
#: beam widths > 1 XQA's JIT kernel takes, and its cap on query rows per CTA (heads per KV
#: head x beams): `decoderXQAImplJIT/kernelUtils.cpp` `supportConfigHMMA`
XQA_BEAM_WIDTHS = (4,)
XQA_MAX_ROWS = 32


def shared_read_tile(engine: str, config, beams: int) -> int:
    """Tokens per tile of a beam request's prompt that its decode attention reads once for
    all `beams` beams (whole tiles only: TensorRT-LLM's XQA kernel, when it takes the
    model's shape), or 0 when each beam reads the whole context itself (vLLM, TensorRT-LLM's
    masked MHA kernel). `config`: the model config (heads, kv_heads, head_dim)."""
    if engine != "trtllm" or beams not in XQA_BEAM_WIDTHS:
        return 0
    group, dim = config.heads // config.kv_heads, config.head_dim
    if group * beams > XQA_MAX_ROWS or dim % 16 or not 16 <= dim <= 256:
        return 0
    if group == 1 and dim <= 128:  # XQA refuses vanilla multi-head attention there
        return 0
    return XQA_TILE_TOKENS


def beam_kv_blocks(prompt: int, own: int, beams: int, block_size: int) -> int:
    """KV blocks of a request whose `beams` beams each hold `own` tokens after a
    `prompt`-token prompt: the prompt's blocks but the last shared, and per beam the
    prompt's last block and its own tokens' blocks (module doc). beams = 1: the blocks of
    prompt + own tokens."""
    shared = (prompt - 1) // block_size
    return shared + beams * -(-(prompt - shared * block_size + own) // block_size)



@dataclass
class Request:
    """One request: `prefix_hashes` one hash per `hash_block_tokens` prompt tokens (empty:
    no prefix information); `p50` / `p90` predicted output tokens (the SJF / KV policies)."""

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_hashes: tuple = ()
    p50: float = float("nan")
    p90: float = float("nan")
    beams: int = 1


@dataclass
class Step:
    """One iteration: tokens of `token_ids` (first tokens included) are emitted at
    `start_s + duration_s`."""

    start_s: float
    duration_s: float
    first_token_ids: list = field(default_factory=list)
    token_ids: list = field(default_factory=list)
    finished_ids: list = field(default_factory=list)
    preempted_ids: list = field(default_factory=list)
    prefill_tokens: int = 0
    batch: int = 0


class _Seq:
    """A request's state in the engine."""

    __slots__ = ("req", "key", "order", "admitted", "computed", "todo", "gen", "own", "shared",
                 "first_s", "last_s", "finish_s", "preemptions", "cached", "reserve", "held",
                 "beams", "tile")

    def __init__(self, req: Request, key: float, order: int, reserve: int):
        self.req, self.key, self.order, self.reserve = req, key, order, reserve
        self.admitted = 0
        self.computed = 0                # tokens whose KV is in the cache
        self.todo = req.prompt_tokens    # prefill tokens still to compute (0: decoding)
        self.gen = 0                     # output tokens emitted (kept over preemption)
        self.own = 0                     # KV blocks held privately
        self.shared: list = []           # prefix hashes referenced in the cache
        self.first_s = self.last_s = self.finish_s = None
        self.preemptions = self.cached = 0
        self.held = False                # counted in the engine's KV reservation
        self.beams = req.beams           # sequences decoded per iteration
        self.tile = 0                    # `shared_read_tile` of a beam request


class Engine:
    """One replica of a compiled deployment under `policy` (ENGINE_POLICIES);
    `aging_tokens_per_s`: the priority credit per second waited of `sjf_pred_aging`;
    `watermark`: share of KV blocks admission keeps free (vLLM: 1%)."""

    def __init__(self, compiled: Compiled, policy: str = "fcfs",
                 aging_tokens_per_s: float = 2.0, watermark: float = 0.01):
        if policy not in ENGINE_POLICIES:
            raise InvalidInputError(f"unknown policy {policy!r}; known policies: "
                                    f"{', '.join(ENGINE_POLICIES)}")
        dep = compiled.deployment
        self.compiled, self.policy, self.aging = compiled, policy, aging_tokens_per_s
        self.bs, self.H = dep.block_size, dep.hash_block_tokens
        self.hb = self.H // self.bs
        self.caching, self.chunked = dep.prefix_caching, dep.chunked_prefill
        self.max_seqs, self.max_tokens = dep.max_num_seqs, dep.max_num_batched_tokens
        self.total = self.free = compiled.kv_blocks
        self.keep = int(watermark * self.total)
        self.cache: dict = {}             # prefix hash -> requests referencing it
        self.lru: OrderedDict = OrderedDict()  # cached hashes no request references
        self.waiting: list = []           # heap of (key, order, seq)
        self.running: list[_Seq] = []     # in admission order
        self.seqs: dict = {}              # request_id -> seq (every request ever added)
        self.now = 0.0
        self.reserved = 0                 # KV blocks reserved by `kv_p90` admissions
        self.outstanding = 0              # prompt + output tokens of unfinished requests
        self.steps = self.preemptions = self.prefilled = self.admissions = 0
        self.busy_s = 0.0
        self.itl: list = []               # (gaps, weight) of every inter-token gap
        self.beams = False                # a request with beams > 1 was added

    @property
    def request_kv_tokens(self) -> int:
        """KV tokens one request may hold: the replica's whole blocks less the watermark's
        (what `add` admits; the step-time memory model's `kv_capacity_tokens` counts the
        tokens of a last partial block and the watermark too)."""
        return (self.total - self.keep) * self.bs

    # -- public ------------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        """Queue `req` (arrived at `req.arrival_s`, not before the engine's clock matters:
        an idle engine starts its next step at the arrival)."""
        if req.request_id in self.seqs:
            raise InvalidInputError(f"request {req.request_id!r} was already added")
        p, o, b = int(req.prompt_tokens), int(req.output_tokens), req.beams
        if p < 1 or o < 1:
            raise InvalidInputError(f"request {req.request_id!r}: prompt_tokens={p} and "
                                    f"output_tokens={o} must both be >= 1")
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
            raise InvalidInputError(f"request {req.request_id!r}: beams={b!r} must be a "
                                    "positive integer")
        need = p + o if b == 1 else beam_kv_blocks(p, o, b, self.bs) * self.bs
        if need > self.request_kv_tokens:
            raise InvalidInputError(
                f"request {req.request_id!r} needs {need:,} KV tokens, more than the "
                f"{self.request_kv_tokens:,} one replica holds; raise --tp or use "
                "a GPU with more memory")
        seq = _Seq(req, priority_key(self.policy, req, self.aging), len(self.seqs),
                   -(-reservation(self.policy, req) // self.bs))
        if b > 1:
            dep = self.compiled.deployment
            seq.tile = shared_read_tile(dep.engine, self.compiled.config, b)
        if self.idle:
            self.now = max(self.now, req.arrival_s)
        self.beams = self.beams or b > 1
        self.seqs[req.request_id] = seq
        self.outstanding += p + o
        heapq.heappush(self.waiting, (seq.key, seq.order, seq))

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def step(self) -> Step | None:
        """Run one iteration (None when idle)."""
        if self.idle:
            return None
        chunks, decodes, preempted = self._schedule()
        if not chunks and not decodes:
            raise InvalidInputError("no request can be scheduled: the KV cache cannot hold "
                                    "the head request; raise --tp")
        duration = self._time(chunks, decodes)
        return self._advance(chunks, decodes, preempted, duration)

    # -- step 1: schedule --------------------------------------------------------------------
    def _schedule(self) -> tuple[list, list, list]:
        """(prefill chunks [(seq, tokens)], decoding seqs, preempted seqs) of this step."""
        if not self.chunked:
            chunks = self._admit(self.max_tokens, whole=True)
            if chunks:
                return chunks, [], []
        budget, chunks, decodes, preempted = self.max_tokens, [], [], []
        run, i = self.running, 0
        bs, beams = self.bs, self.beams
        while i < len(run) and budget > 0:
            s = run[i]
            n = min(s.todo, budget) if s.todo else 1
            if beams and s.beams > 1 and not s.todo:  # every beam's tokens (module doc)
                n, p = s.beams, s.req.prompt_tokens
                if not self._alloc(s, beam_kv_blocks(p, s.computed + 1 - p, n, bs) * bs):
                    preempted.append(self._preempt(i))
                    continue
            # a decode token needs a new block only when the last one is full
            elif (s.todo or not s.computed % bs) and not self._alloc(s, s.computed + n):
                preempted.append(self._preempt(i))
                continue
            (chunks.append((s, n)) if s.todo else decodes.append(s))
            budget -= n
            i += 1
        if self.chunked and not preempted:
            chunks += self._admit(budget)
        return chunks, decodes, preempted

    def _admit(self, budget: int, whole: bool = False) -> list:
        """Waiting requests in policy order while they fit; [(seq, prefill tokens)]."""
        out = []
        while self.waiting and len(self.running) < self.max_seqs and budget > 0:
            s = self.waiting[0][2]
            hashes = self._lookup(s) if self.caching and not s.computed else []
            hit = len(hashes) * self.H
            todo = s.todo - hit
            n = todo if whole else min(todo, budget)
            alone = not self.running
            if whole and n > budget and out:
                break
            if s.reserve and self.reserved + s.reserve > self.total - self.keep and not alone:
                break
            pinned = sum(self.hb for h in hashes if h in self.lru)
            room = self.free + len(self.lru) * self.hb - pinned
            need = -(-(hit + n) // self.bs) - len(hashes) * self.hb
            if need > room or (need > room - self.keep and not alone):
                break
            heapq.heappop(self.waiting)
            for h in hashes:
                self._ref(h)
            s.shared, s.computed, s.todo = list(hashes), hit, todo
            if not s.preemptions:
                s.cached = hit
            self._alloc(s, hit + n)
            self.admissions += 1
            s.admitted = self.admissions
            if s.reserve:
                self.reserved += s.reserve
                s.held = True
            self.running.append(s)
            out.append((s, n))
            budget -= n
        return out

    # -- step 2: time ------------------------------------------------------------------------
    def _time(self, chunks: list, decodes: list) -> float:
        """Seconds of the iteration: the step-time runtime on the batch."""
        if self.beams:  # each beam a decode sequence; the KV it reads (module doc)
            nd = ctx = 0
            for s in decodes:
                once = s.tile and s.tile * (s.req.prompt_tokens // s.tile)
                nd += s.beams
                ctx += once + s.beams * (s.computed - once)
        else:
            nd, ctx = len(decodes), sum(s.computed for s in decodes)
        return self.compiled.batch_ms([n for _, n in chunks], [s.computed for s, _ in chunks],
                                      nd, ctx) / 1000.0

    # -- step 3: advance ---------------------------------------------------------------------
    def _advance(self, chunks: list, decodes: list, preempted: list, duration: float) -> Step:
        """Apply the iteration: KV computed, tokens emitted, finished requests leave."""
        start = self.now
        end = self.now = start + duration
        step = Step(start, duration, preempted_ids=[s.req.request_id for s in preempted],
                    batch=len(chunks) + len(decodes))
        gaps = []
        for s, n in chunks:
            s.computed += n
            s.todo -= n
            step.prefill_tokens += n
            if s.todo:
                continue
            if self.caching:
                self._register(s)
            if s.first_s is None:
                s.first_s = end
                step.first_token_ids.append(s.req.request_id)
            else:
                gaps.append(end - s.last_s)
            self._emit(s, end, step)
        tokens = step.token_ids
        for s in decodes:  # `_emit` inlined: the hot loop
            s.computed += 1
            s.gen += 1
            gaps.append(end - s.last_s)
            s.last_s = end
            tokens.append(s.req.request_id)
            if s.gen >= s.req.output_tokens:
                self._finish(s, end)
                step.finished_ids.append(s.req.request_id)
        if gaps:
            self.itl.append((np.array(gaps), 1))
        if step.finished_ids:
            self.running = [s for s in self.running if s.finish_s is None]
        self.steps += 1
        self.prefilled += step.prefill_tokens
        self.busy_s += duration
        return step

    def _emit(self, s: _Seq, t: float, step: Step) -> None:
        s.gen += 1
        s.last_s = t
        step.token_ids.append(s.req.request_id)
        if s.gen >= s.req.output_tokens:
            self._finish(s, t)
            step.finished_ids.append(s.req.request_id)

    def _finish(self, s: _Seq, t: float) -> None:
        s.finish_s = t
        self._release(s)
        self.outstanding -= s.req.prompt_tokens + s.req.output_tokens

    # -- decode-only fast path (batch simulation) --------------------------------------------
    def decode_until(self, limit_s: float) -> int:
        """Run the decode-only iterations that start before `limit_s` (the next arrival)
        in one go, stopping at the first finish; exactly what as many `step()` calls would
        do. Returns the iterations run (0: not applicable, call `step()`)."""
        run = self.running
        if self.waiting or not run or self.beams or any(s.todo for s in run):
            return 0
        k = min(s.req.output_tokens - s.gen for s in run)
        if k < 2:
            return 0
        batch = len(run)
        ctx = sum(s.computed for s in run)
        steps = np.arange(float(min(k, 32)))  # most stretches end at an arrival within 32
        dur = self.compiled.decode_ms(batch, (ctx + batch * steps) / batch) / 1000.0
        if len(steps) < k and self.now + dur.sum() < limit_s:
            dur = self.compiled.decode_ms(batch, (ctx + batch * np.arange(float(k))) / batch)
            dur /= 1000.0
        ends = self.now + np.cumsum(dur)
        k = min(k, 1 + int(np.searchsorted(ends[:-1], limit_s, side="left")))
        if k < 2:
            return 0
        bs, hb = self.bs, self.hb
        if batch * (k // bs + 1) > self.free:  # the bound does not hold: count exactly
            need = sum(max(0, -(-(s.computed + k) // bs) - len(s.shared) * hb - s.own)
                       for s in run)
            if need > self.free + len(self.lru) * hb:
                return 0
        end = float(ends[k - 1])
        first = float(ends[0])
        gaps = [first - s.last_s for s in run]
        self.itl.append((np.array(gaps), 1))
        self.itl.append((np.diff(ends[:k]), batch))
        finished = False
        for s in run:
            c = s.computed
            if (c - 1) // bs != (c + k - 1) // bs:  # crosses into a new block
                self._alloc(s, c + k)
            s.computed = c + k
            s.gen += k
            s.last_s = end
            if s.gen >= s.req.output_tokens:
                self._finish(s, end)
                finished = True
        if finished:
            self.running = [s for s in run if s.finish_s is None]
        self.steps += k
        self.busy_s += end - self.now
        self.now = end
        return k

    # -- KV blocks and the prefix cache ------------------------------------------------------
    def _alloc(self, s: _Seq, tokens: int) -> bool:
        """Give `s` blocks for `tokens` KV tokens, evicting cached prefixes if needed."""
        need = -(-tokens // self.bs) - len(s.shared) * self.hb - s.own
        if need <= 0:
            return True
        while self.free < need and self.lru:
            del self.cache[self.lru.popitem(last=False)[0]]
            self.free += self.hb
        if self.free < need:
            return False
        self.free -= need
        s.own += need
        return True

    def _release(self, s: _Seq) -> None:
        """Free `s`'s own blocks; its cached prefixes become evictable when unreferenced."""
        for h in s.shared:
            self.cache[h] -= 1
            if not self.cache[h]:
                self.lru[h] = None
        self.free += s.own
        s.own, s.shared = 0, []
        if s.held:
            self.reserved -= s.reserve
            s.held = False

    def _preempt(self, i: int) -> _Seq:
        """Requeue (recompute) the lowest-priority running request from index `i` on."""
        run = self.running
        k = max(range(i, len(run)), key=lambda j: (run[j].key, run[j].admitted))
        s = run.pop(k)
        self._release(s)
        s.computed, s.todo = 0, s.req.prompt_tokens + s.gen
        s.preemptions += 1
        self.preemptions += 1
        heapq.heappush(self.waiting, (s.key, s.order, s))
        return s

    def _lookup(self, s: _Seq) -> list:
        return self._match(s.req)

    def _match(self, req: Request) -> list:
        """The longest run of `req`'s leading prefix hashes in the cache (never the whole
        prompt: its last token is always computed)."""
        out = []
        for h in req.prefix_hashes[:(req.prompt_tokens - 1) // self.H]:
            if h not in self.cache:
                break
            out.append(h)
        return out

    def cached_prefix_tokens(self, req: Request) -> int:
        """Prompt tokens of `req` this replica's prefix cache holds now (routing)."""
        return len(self._match(req)) * self.H if self.caching else 0

    def _ref(self, h) -> None:
        if not self.cache[h]:
            del self.lru[h]
        self.cache[h] += 1

    def _register(self, s: _Seq) -> None:
        """Cache the full prompt blocks `s` just computed (those not cached yet)."""
        full = s.req.prompt_tokens // self.H
        for h in s.req.prefix_hashes[len(s.shared):full]:
            if h in self.cache:
                continue
            self.cache[h] = 1
            s.shared.append(h)
            s.own -= self.hb


def next_time(engines: list[Engine]) -> tuple[float, Engine | None]:
    """The busy engine whose next iteration starts first, and that time (inf, None: all
    idle)."""
    best, when = None, inf
    for e in engines:
        if not e.idle and e.now < when:
            best, when = e, e.now
    return when, best
