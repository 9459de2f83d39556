"""Max batch tuning: the `max_num_seqs` that maximises a deployment's SLO-compliant capacity,
as a submitter tunes an engine's maximum batch size (TensorRT-LLM's `max_batch_size`, vLLM's
`max_num_seqs`) to raise the highest rate its latency limits allow.

A cap bounds the step time, hence TPOT, and turns overload into queueing (TTFT); too low a
cap wastes throughput. `tune` runs `search.capacity` at caps on a geometric grid and keeps
the cap of the highest capacity (ties: the smaller cap, the steadier TPOT):
- candidates: the deployment's own `max_num_seqs` (so the answer is never worse than it)
  and the grid KV_BOUND / RATIO^k for k = 0, 1, ... down to MIN_CAP, where KV_BOUND is the
  most requests the KV cache holds at the workload's mean prompt (`kv_bound`: a larger cap
  hardly binds), whether above or below the deployment's own;
- coarse: the grid from the top down while the capacity does not fall (it rises as the cap
  leaves room for the batch, and falls once the cap starves it: the first fall ends it);
- fine: FINE times, the caps one step of the ratio's square root (then its fourth root)
  either side of the best so far.
Every search is cached by cap, so no cap is searched twice. Only the best cap's capacity is
needed exactly (and its spread over seeds: a seed of the chosen cap that missed the floor
is searched again without one, so every seed reports its own rate): each cap after the
first is searched with the best rate so far as its floor (`search.capacity`'s `floor_rps`),
so a cap that does not hold that rate costs one probe (stopped early once it certainly
breaks the SLO) and answers 0 ("below"), and a cap that holds it bisects only the bracket
above it (holding it exactly is a tie). Rates in req/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from servecast.errors import InvalidInputError
from servecast.simulator import search
from servecast.simulator.deployment import Compiled

RATIO = 2.0  # the coarse grid's step between caps
FINE = 2  # refinements around the best cap (ratio^(1/2), then ratio^(1/4))
MIN_CAP = 8  # the smallest cap tried


@dataclass
class Tuned:
    """A tuning's answer: the chosen cap, its capacity search and every cap's rate."""

    max_num_seqs: int
    capacity: search.Capacity | None  # None: no cap meets the SLO
    compiled: Compiled  # the deployment compiled at the chosen cap
    kv_bound: int
    #: cap -> capacity; 0: below `below[cap]`, the best rate when it was tried (or no rate
    #: meets the SLO at that cap)
    rates: dict[int, float] = field(default_factory=dict)
    below: dict[int, float] = field(default_factory=dict)

    def text(self) -> str:
        """'cap: rate' per cap tried, '< rate' where only the floor was probed."""
        return ", ".join(f"{c}: {r:.3g}" if r else f"{c}: < {self.below[c]:.3g}"
                         for c, r in self.rates.items())


def parse_cap(text: str, default: int = 256) -> int | None:
    """A `--max-num-seqs` value: 'auto' -> None (tune it), else a positive integer;
    InvalidInputError naming the flag and the fix (`default`: the cap to suggest)."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidInputError(f"--max-num-seqs {text!r}: give a positive integer (e.g. "
                                f"{default}) or auto")
    return n


def kv_bound(compiled: Compiled, prompt: np.ndarray) -> int:
    """The most running requests the replica's KV cache holds when each holds the mean of
    `prompt` tokens: the largest cap that can bind."""
    return max(1, math.floor(compiled.memory["kv_capacity_tokens"]
                             / max(float(np.mean(prompt)), 1.0)))


def tune(base: Compiled, slo: search.SLO, sample=None, seeds: int = 1,
         upper_rps: float | None = None, replicas: int = 1,
         ratio: float = RATIO, fine: int = FINE, min_cap: int = MIN_CAP) -> Tuned:
    """The `max_num_seqs` of the highest capacity within `slo` (module doc). `base`: the
    deployment compiled at its own max_num_seqs (`search.compile_replica`), searched as is;
    the other caps are its deployment compiled with its step-time runtime. `sample`,
    `seeds`, `upper_rps` and `replicas` as in `search.capacity` (one replica simulated;
    rates over `replicas`). Raises
    `search.SLOUnreachableError` when no cap meets the SLO, InvalidInputError for a bad
    grid."""
    if not ratio > 1 or not (isinstance(fine, int) and fine >= 0) or min_cap < 1:
        raise InvalidInputError(f"max-batch grid ratio={ratio!r} must be > 1, fine={fine!r} "
                                f">= 0 and min_cap={min_cap!r} >= 1")
    sample = sample or search.poisson_sample(replicas=replicas)
    own = base.deployment.max_num_seqs
    bound = kv_bound(base, sample(0)[0])
    done: dict[int, tuple[search.Capacity | None, Compiled, str]] = {}
    below: dict[int, float] = {}

    def rate(cap: int) -> float:
        cap = max(min_cap, int(cap))
        if cap not in done:
            c = base if cap == own else search.compile_replica(
                replace(base.deployment, max_num_seqs=cap), base.runtime)
            floor = max((rate(k) for k in done), default=0.0) or None
            try:
                got = search.capacity(c, slo, sample, seeds=seeds, replicas=replicas,
                                      upper_rps=upper_rps, floor_rps=floor)
                done[cap] = (got if got.rate >= (floor or 1e-12) else None, c, "")
            except search.SLOUnreachableError as e:
                done[cap] = (None, c, str(e))
            if floor and not done[cap][0]:
                below[cap] = floor
        got = done[cap][0]
        return got.rate if got else 0.0

    def best() -> int:  # the highest rate, ties the smaller cap
        return max(done, key=lambda c: (rate(c), -c))

    rate(own)
    cap = bound
    while cap >= min_cap:  # coarse, from the top down (module doc)
        before = max(rate(c) for c in done)
        if rate(cap) < before and cap < bound:
            break
        cap = math.floor(cap / ratio)
    step = ratio
    for _ in range(fine):
        step = math.sqrt(step)
        b = best()
        for c in (round(b / step), round(b * step)):
            if min_cap <= c <= max(bound, own):
                rate(c)
    chosen = best()
    got, compiled, why = done[chosen]
    if got is None:
        raise search.SLOUnreachableError(f"{why} (at every max_num_seqs tried: "
                                         f"{', '.join(str(c) for c in sorted(done))})")
    if min(got.per_seed) == 0.0:  # a seed that missed the floor: search it for its own rate
        got = search.capacity(compiled, slo, sample, seeds=seeds, replicas=replicas,
                              upper_rps=upper_rps)
    return Tuned(max_num_seqs=chosen, capacity=got, compiled=compiled, kv_bound=bound,
                 rates={c: rate(c) for c in sorted(done)}, below=below)


def capacity_at(base: Compiled, slo: search.SLO, sample=None, auto: bool = False,
                seeds: int = 1, replicas: int = 1, upper_rps: float | None = None
                ) -> tuple[search.Capacity, Compiled, Tuned | None]:
    """`search.capacity` of `base` (a deployment compiled by `search.compile_replica`) at its
    own max_num_seqs, or with `auto` at the cap `tune` picks (`base` is its first
    candidate): (capacity, the deployment compiled at that cap, the tuning or None).
    Arguments as `tune`'s; what `servecast capacity`, the dashboard and the MLPerf
    protocol call for `--max-num-seqs N | auto` (N: `base` compiled at N)."""
    if auto:
        tuned = tune(base, slo, sample, seeds, upper_rps, replicas)
        return tuned.capacity, tuned.compiled, tuned
    return search.capacity(base, slo, sample, seeds=seeds, replicas=replicas,
                           upper_rps=upper_rps), base, None
