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
    import heapq

    waiting: list[tuple[float, int]] = []
    run = np.zeros(0, np.int64)      # running requests in admission order (last = newest)
    gen = np.zeros(n, np.int64)      # output tokens produced so far (kept over preemption)
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    prl, resl = pr.tolist(), res.tolist()
    t, nxt, done, preempt = 0.0, 0, 0, 0
    iters, prefilled, batch_sum, busy = 0, 0, 0, 0.0
    a, b = cfg.iter_base_ms / 1000.0, cfg.iter_token_ms / 1000.0
    if cfg.preempt not in ("priority", "newest"):
        raise InvalidInputError(f"preempt={cfg.preempt!r}; use 'priority' or 'newest'")
    newest = cfg.preempt == "newest"
    admit_kv = cfg.kv_tokens * (1.0 - cfg.watermark)
    c = cfg.iter_kv_ms / 1000.0
    while done < n:
        while nxt < n and arr[nxt] <= t:
            heapq.heappush(waiting, (prio[nxt], nxt))
            nxt += 1
        if not len(run) and not waiting:
            t = arr[nxt]
            continue
        held = np.maximum(pr[run] + res[run], pr[run] + gen[run] + 1)
        used = int(held.sum())
        preempted = False
        while used > cfg.kv_tokens and len(run) > 1:  # out of KV: preempt the lowest priority
            k = (len(run) - 1 if newest else
                 len(run) - 1 - int(np.argmax(prio[run][::-1])))  # ties: the newest admitted
            i = int(run[k])
            used -= int(held[k])
            run, held = np.delete(run, k), np.delete(held, k)
            preempt += 1
            preempted = True
            heapq.heappush(waiting, (prio[i], i))
        new, prefill = [], 0
        while not preempted and waiting and len(run) + len(new) < cfg.max_batch:
            i = waiting[0][1]
            tokens = prl[i] + int(gen[i])             # prompt (+ recomputed output)
            need = prl[i] + max(resl[i], gen[i] + 1)
            alone = not len(run) and not new  # an idle engine always takes its head request
            if (used + need > admit_kv and not alone) or \
                    (new and prefill + tokens > cfg.max_prefill_tokens):
                break
            heapq.heappop(waiting)
            new.append(i)
            used += need
            prefill += tokens
        decoding = len(run)
        kv_read = int((pr[run] + gen[run]).sum()) if c else 0
        step = a + b * (prefill + decoding) + c * kv_read
        t += step
        iters, prefilled, busy = iters + 1, prefilled + prefill, busy + step
        batch_sum += decoding + len(new)
        if new:
            run = np.concatenate([run, np.array(new, np.int64)])
            for i in new:
                if first[i] != first[i]:
                    first[i] = t
        gen[run] += 1
        fin = gen[run] >= out[run]
        if fin.any():
            finish[run[fin]] = t
            done += int(fin.sum())
            run = run[~fin]
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    return {"jct_s": (finish - arr)[inv], "ttft_s": (first - arr)[inv],
            "preemptions": preempt, "makespan_s": float(np.nanmax(finish) - arr[0]),
            "iterations": iters, "prefill_tokens": prefilled, "busy_s": busy,
            "mean_batch": batch_sum / max(iters, 1)}


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
