"""What-if replay of a request trace against one serving instance with continuous batching.

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

Policies: fcfs, sjf_pred (shortest predicted p50 first), sjf_p90 (shortest predicted p90
first: where outputs are bimodal the p50 sits on one mode, the p90 tells whether the long mode
is likely), sjf_oracle (true output length), sjf_pred_aging (predicted p50 minus
`aging_tokens_per_s` x seconds waited: every waiting request ages at the same rate, so this is
the static key p50 + rate x arrival; it bounds the starvation of long requests), kv_p90 /
kv_worst (FCFS order, admit only if prompt + reserved output fits the budget, the reservation
being the predicted p90 or the worst case `max_output`).
Times in seconds, token counts in tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError

POLICIES = ("fcfs", "sjf_pred", "sjf_p90", "sjf_oracle", "sjf_pred_aging", "kv_p90",
            "kv_worst")


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


def whatif(frame, p50: np.ndarray, p90: np.ndarray, load: float = 0.9,
           policies: tuple[str, ...] = POLICIES, config: ServingConfig | None = None
           ) -> pl.DataFrame:
    """Replay `frame` (arrival_s, prompt_tokens, output_tokens) at `load` x the instance's
    saturation throughput under each policy, with predicted `p50`/`p90` (tokens, row-aligned).

    Returns one row per policy: mean/p50/p99 JCT and TTFT (s), throughput (req/s, tok/s),
    preemptions, plus the load and rates used.
    """
    cfg = config or ServingConfig()
    df = frame if isinstance(frame, pl.DataFrame) else pl.DataFrame(frame)
    for c in ("arrival_s", "prompt_tokens", "output_tokens"):
        if c not in df.columns:
            raise InvalidInputError(f"what-if needs column {c!r} (have {', '.join(df.columns)})")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise InvalidInputError(f"unknown policy {sorted(unknown)}; known: {', '.join(POLICIES)}")
    if not 0 < load:
        raise InvalidInputError(f"load factor {load} must be > 0 (e.g. 0.9)")
    prompt = df["prompt_tokens"].to_numpy()
    out = df["output_tokens"].to_numpy()
    p50, p90 = np.asarray(p50, float), np.asarray(p90, float)
    if len(p50) != df.height or len(p90) != df.height:
        raise InvalidInputError("p50/p90 must have one value per request row")
    cap = capacity(prompt, out, cfg)
    arr = scale_arrivals(df["arrival_s"].to_numpy(), load * cap)
    setups = {
        "fcfs": {}, "sjf_pred": {"priority": p50}, "sjf_p90": {"priority": p90},
        "sjf_oracle": {"priority": out},
        "sjf_pred_aging": {"priority": p50 + cfg.aging_tokens_per_s * arr},
        "kv_p90": {"reserve": np.ceil(p90)},
        "kv_worst": {"reserve": np.full(df.height, float(cfg.max_output))},
    }
    rows = []
    for name in policies:
        r = simulate(arr, prompt, out, config=cfg, **setups[name])
        jct, ttft = r["jct_s"], r["ttft_s"]
        rows.append({
            "policy": name, "mean_jct_s": float(jct.mean()),
            "p50_jct_s": float(np.quantile(jct, 0.5)), "p99_jct_s": float(np.quantile(jct, 0.99)),
            "mean_ttft_s": float(ttft.mean()), "p99_ttft_s": float(np.quantile(ttft, 0.99)),
            "throughput_rps": df.height / r["makespan_s"],
            "tokens_per_s": float(out.sum()) / r["makespan_s"],
            "preemptions": int(r["preemptions"]), "load": load,
            "capacity_rps": cap, "arrival_rps": load * cap,
        })
    return pl.DataFrame(rows)


def sjf_gain(result: pl.DataFrame, policy: str = "sjf_pred") -> float:
    """Fraction of oracle SJF's mean-JCT reduction over FCFS that `policy` (default: SJF by
    predicted p50) achieves."""
    jct = dict(zip(result["policy"], result["mean_jct_s"], strict=True))
    gap = jct["fcfs"] - jct["sjf_oracle"]
    return float("nan") if gap <= 0 else (jct["fcfs"] - jct[policy]) / gap


def config_dict(config: ServingConfig) -> dict:
    """The config as a plain dict (for reports)."""
    return asdict(config)


def whatif_trace(store, trace: str, models=None, load: float = 0.9,
                 config: ServingConfig | None = None, max_rows: int | None = None,
                 fast: bool = True) -> pl.DataFrame:
    """`whatif` on the held-out (last 30%) requests of `trace`, with output-length
    predictions from the model dir `models` or, without one, a metadata model trained on
    the first 70% (fast settings)."""
    from servecast.predictors.output_length.core import completed
    from servecast.predictors.output_length.metrics import split
    from servecast.predictors.output_length.train import SETTINGS, load_requests

    df = completed(load_requests(store, trace))
    train, test, _ = split(df)
    if max_rows:
        test = test[:max_rows]
    if models is not None:
        from servecast.estimator import Estimator

        pred = Estimator.load(models).output_length_batch(test)
    else:
        from servecast.predictors.output_length import create

        pred = create("metadata", **SETTINGS["metadata"][fast]).fit(train).predict(test)
    return whatif(test, pred["p50"].to_numpy(), pred["p90"].to_numpy(), load=load,
                  config=config)
