"""The simulator engine: one serving instance with continuous batching, request by request.

Discrete-event, iteration-level (vLLM-style): each iteration admits waiting requests (policy
order, KV budget, batch limits), prefills them and decodes one token for every running
request; it takes `a + b * tokens + c * kv` ms where tokens = prefill tokens + decoding
requests and kv = KV tokens the decoders read (attention is memory-bound; c = 0 gives the
plain `a + b * tokens` model). KV use is prompt + generated tokens per running request; when
the next token does not fit, the running request of the lowest priority (FCFS: latest
arrival, SJF: longest) is preempted by recompute: it keeps the tokens it already streamed,
waits again, and on re-admission its prompt plus those tokens are prefilled again.
Priorities are static and a waiting request never evicts a running one (vLLM's priority
preemption makes SJF thrash on recompute); long requests can therefore starve under SJF,
which shows in p99 JCT.
Times in seconds, token counts in tokens.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from servecast.errors import InvalidInputError


@dataclass
class ServingConfig:
    """One instance; defaults resemble a 7B model (fp16) on one A100-80GB.

    iter_base_ms: a, fixed time of an iteration (reading ~14 GB of weights), ms
    iter_token_ms: b, time per token processed in the iteration (~11k prefill tok/s), ms
    kv_tokens: KV-cache budget (~60 GB free / 0.5 MB per token), tokens
    max_batch: running requests at most; max_prefill_tokens: prefill tokens per iteration
    max_output: worst-case output length reserved by `kv_worst`, tokens
    iter_kv_ms: c, per KV token read by the decoders in an iteration (0.5 MB at ~1.6 TB/s),
      ms; 0 gives the plain a + b * tokens model (decode batches ~3x too fast for a 7B)
    preempt: victim when KV runs out: "priority" (lowest priority, ties newest; vLLM) or
      "newest" (the most recently admitted, whatever the policy)
    aging_tokens_per_s: priority credit of `sjf_pred_aging` per second waited, tokens/s
    """

    iter_base_ms: float = 7.0
    iter_token_ms: float = 0.09
    kv_tokens: int = 120_000
    max_batch: int = 256
    max_prefill_tokens: int = 8192
    max_output: int = 2048
    iter_kv_ms: float = 0.0003
    preempt: str = "priority"
    watermark: float = 0.01
    aging_tokens_per_s: float = 2.0


def simulate(arrival_s: np.ndarray, prompt: np.ndarray, output: np.ndarray,
             priority: np.ndarray | None = None, reserve: np.ndarray | None = None,
             config: ServingConfig | None = None) -> dict[str, np.ndarray | int | float]:
    """Replay one trace. `priority`: lower is admitted first (None = arrival order);
    `reserve`: output tokens reserved at admission (None = no reservation).

    One loop turn is one engine iteration (vLLM-style scheduler):
    1. the running requests each need KV for one more token; while that exceeds the budget
       the lowest-priority running request (ties: the newest admitted) is preempted;
    2. if nothing was preempted, waiting requests are admitted in priority order while
       their KV need fits (prompt + tokens already generated + 1, or prompt + reservation
       when larger), up to `max_batch` running and `max_prefill_tokens` prefilled;
    3. the iteration takes `a + b * (prefill tokens + decoding requests) + c * (KV tokens of
       the decoders)` and every request in it gains one output token (a prefill produces
       the first token).
    A preempted request keeps the tokens it has already streamed; on re-admission its
    prompt and those tokens are prefilled again (recompute). JCT = finish - arrival,
    TTFT = first token - arrival.

    Returns arrays `jct_s`, `ttft_s` (per request), `preemptions`, `makespan_s`, and
    `iterations`, `prefill_tokens` (recompute included), `busy_s`, `mean_batch`.
    """
    cfg = config or ServingConfig()
    n = len(arrival_s)
    order = np.argsort(arrival_s, kind="stable")
    arr = np.asarray(arrival_s, float)[order]
    pr = np.asarray(prompt, np.int64)[order]
    out = np.maximum(np.asarray(output, np.int64)[order], 1)
    prio = np.arange(n, dtype=float) if priority is None else np.asarray(priority, float)[order]
    res = np.zeros(n) if reserve is None else np.maximum(np.asarray(reserve, float)[order], 0)
    if np.any(pr + out > cfg.kv_tokens):
        k = int(np.argmax(pr + out))
        raise InvalidInputError(f"a request of {pr[k]} prompt + {out[k]} output tokens exceeds "
                                f"kv_tokens {cfg.kv_tokens}; raise the KV budget")
    if cfg.preempt not in ("priority", "newest"):
        raise InvalidInputError(f"preempt={cfg.preempt!r}; use 'priority' or 'newest'")
    eng = _Engine(arr, pr, out, prio, res, cfg)
    while eng.done < n:  # one turn = one engine iteration (the steps of the docstring)
        eng.arrive()
        if not len(eng.run) and not eng.waiting:
            eng.t = arr[eng.nxt]  # idle: jump to the next arrival
            continue
        used, preempted = eng.preempt()
        new, prefill = ([], 0) if preempted else eng.admit(used)
        eng.iterate(new, prefill)
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    return {"jct_s": (eng.finish - arr)[inv], "ttft_s": (eng.first - arr)[inv],
            "preemptions": eng.preempted, "makespan_s": float(np.nanmax(eng.finish) - arr[0]),
            "iterations": eng.iters, "prefill_tokens": eng.prefilled, "busy_s": eng.busy,
            "mean_batch": eng.batch_sum / max(eng.iters, 1)}


class _Engine:
    """The state of one `simulate` replay (requests in arrival order) and its steps: `arrive`
    (queue the requests that have arrived), `preempt` (step 1), `admit` (step 2) and
    `iterate` (step 3: time, first tokens, one token each, finishes)."""

    def __init__(self, arr, pr, out, prio, res, cfg: ServingConfig):
        n = len(arr)
        self.arr, self.pr, self.out, self.prio, self.res, self.cfg = arr, pr, out, prio, res, cfg
        self.waiting: list[tuple[float, int]] = []  # heap of (priority, request)
        self.run = np.zeros(0, np.int64)  # running requests in admission order (last = newest)
        self.gen = np.zeros(n, np.int64)  # output tokens produced so far (kept over preemption)
        self.first = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.prl, self.resl = pr.tolist(), res.tolist()
        self.t, self.nxt, self.done, self.preempted = 0.0, 0, 0, 0
        self.iters, self.prefilled, self.batch_sum, self.busy = 0, 0, 0, 0.0
        self.a, self.b = cfg.iter_base_ms / 1000.0, cfg.iter_token_ms / 1000.0
        self.c = cfg.iter_kv_ms / 1000.0
        self.newest = cfg.preempt == "newest"
        self.admit_kv = cfg.kv_tokens * (1.0 - cfg.watermark)

    def arrive(self) -> None:
        """Queue every request that has arrived by now."""
        while self.nxt < len(self.arr) and self.arr[self.nxt] <= self.t:
            heapq.heappush(self.waiting, (self.prio[self.nxt], self.nxt))
            self.nxt += 1

    def preempt(self) -> tuple[int, bool]:
        """Step 1: while the running requests' KV for one more token exceeds the budget,
        requeue the lowest-priority one (ties: the newest admitted). Returns (KV tokens
        held, whether any was preempted)."""
        run, pr, gen, prio = self.run, self.pr, self.gen, self.prio
        held = np.maximum(pr[run] + self.res[run], pr[run] + gen[run] + 1)
        used = int(held.sum())
        preempted = False
        while used > self.cfg.kv_tokens and len(run) > 1:
            k = (len(run) - 1 if self.newest else
                 len(run) - 1 - int(np.argmax(prio[run][::-1])))  # ties: the newest admitted
            i = int(run[k])
            used -= int(held[k])
            run, held = np.delete(run, k), np.delete(held, k)
            self.preempted += 1
            preempted = True
            heapq.heappush(self.waiting, (prio[i], i))
        self.run = run
        return used, preempted

    def admit(self, used: int) -> tuple[list[int], int]:
        """Step 2: waiting requests in priority order while their KV need fits and the batch
        and prefill limits allow. Returns (admitted requests, prefill tokens)."""
        cfg, waiting, run, gen = self.cfg, self.waiting, self.run, self.gen
        new, prefill = [], 0
        while waiting and len(run) + len(new) < cfg.max_batch:
            i = waiting[0][1]
            tokens = self.prl[i] + int(gen[i])             # prompt (+ recomputed output)
            need = self.prl[i] + max(self.resl[i], gen[i] + 1)
            alone = not len(run) and not new  # an idle engine always takes its head request
            if (used + need > self.admit_kv and not alone) or \
                    (new and prefill + tokens > cfg.max_prefill_tokens):
                break
            heapq.heappop(waiting)
            new.append(i)
            used += need
            prefill += tokens
        return new, prefill

    def iterate(self, new: list[int], prefill: int) -> None:
        """Step 3: the iteration's time; the admitted join the batch; every running request
        gains one token; the finished leave."""
        run, gen = self.run, self.gen
        decoding = len(run)
        kv_read = int((self.pr[run] + gen[run]).sum()) if self.c else 0
        step = self.a + self.b * (prefill + decoding) + self.c * kv_read
        self.t += step
        self.iters, self.prefilled, self.busy = (self.iters + 1, self.prefilled + prefill,
                                                 self.busy + step)
        self.batch_sum += decoding + len(new)
        if new:
            run = np.concatenate([run, np.array(new, np.int64)])
            for i in new:
                if self.first[i] != self.first[i]:
                    self.first[i] = self.t
        gen[run] += 1
        fin = gen[run] >= self.out[run]
        if fin.any():
            self.finish[run[fin]] = self.t
            self.done += int(fin.sum())
            run = run[~fin]
        self.run = run


def capacity(prompt: np.ndarray, output: np.ndarray, config: ServingConfig | None = None) -> float:
    """Saturation throughput (requests/s): every request arrives at t=0, FCFS."""
    r = simulate(np.zeros(len(prompt)), prompt, output, config=config)
    return len(prompt) / r["makespan_s"]


def scale_arrivals(arrival_s: np.ndarray, rate: float) -> np.ndarray:
    """Arrival times stretched/compressed so the mean rate is `rate` requests/s (shape kept)."""
    a = np.asarray(arrival_s, float) - np.min(arrival_s)
    span = a.max()
    if span <= 0:
        raise InvalidInputError("arrival times span 0 s; need at least two distinct arrivals")
    return a * ((len(a) - 1) / span) / rate
