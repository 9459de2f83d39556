"""Capacity search and planning on the simulator: the highest Poisson rate (or trace rate
scale) whose p99 TTFT and p99 TPOT stay within limits (MLPerf's Server rule), and the fewest
GPUs (replicas x TP) that serve a load within an SLO.

A replica is one engine instance (`simulator.core.Engine`) of a `Deployment` on `tp` GPUs;
its iteration time is the step-time runtime's for the actual batch divided by the engine
family's efficiency (`simulator.deployment`). Requests are routed to replicas at random, so
each of R replicas sees a Poisson stream at rate / R and one replica is simulated (a trace:
its requests dealt at random to R replicas, each simulated). TTFT = first token - arrival;
TPOT = (last token - first token) / (output tokens - 1), per request with > 1 output token
(MLPerf's definition). Rates in requests/s, latencies in ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from servecast.errors import InvalidInputError
from servecast.simulator.cluster import simulate_trace
from servecast.simulator.core import Request
from servecast.simulator.deployment import Compiled, Deployment
from servecast.simulator.workloads import lengths, poisson_arrivals


class SLOUnreachableError(InvalidInputError):
    """No rate meets the SLO, not even the lowest one probed."""


@dataclass(frozen=True)
class SLO:
    """p99 limits (ms): MLPerf's Server rule; None = no limit on that metric."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def __post_init__(self):
        for name in ("ttft_ms", "tpot_ms"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise InvalidInputError(f"SLO {name}={v!r} must be > 0 ms")
        if self.ttft_ms is None and self.tpot_ms is None:
            raise InvalidInputError("give an SLO: a p99 TTFT and/or a p99 TPOT limit in ms")

    def met(self, m: dict) -> bool:
        return ((self.ttft_ms is None or m["p99_ttft_ms"] <= self.ttft_ms)
                and (self.tpot_ms is None or m["p99_tpot_ms"] <= self.tpot_ms))

    def text(self) -> str:
        parts = [f"p99 TTFT <= {self.ttft_ms:g} ms" if self.ttft_ms else "",
                 f"p99 TPOT <= {self.tpot_ms:g} ms" if self.tpot_ms else ""]
        return " and ".join(p for p in parts if p)


def compile_replica(deployment: Deployment, runtime=None) -> Compiled:
    """One replica of `deployment` compiled (the search simulates one replica)."""
    return Compiled(replace(deployment, replicas=1), runtime)


def run(compiled: Compiled, arrivals: np.ndarray, prompt: np.ndarray,
        output: np.ndarray, slo: SLO | None = None, beams: int = 1) -> dict[str, np.ndarray]:
    """Per-request `ttft_s`, `e2e_s` and `tpot_s` (NaN for one-token outputs) of these
    requests on one replica, plus `makespan_s` and `stopped`. `beams`: sequences of a beam
    search per request (`Request.beams`).

    With `slo`, the simulation stops as soon as its p99 TTFT or p99 TPOT is certain to
    break the limit (`Breaks`); then `stopped` is True and every time is a lower bound of
    the full run's (a request not yet routed counts 0, one not yet started its wait so far,
    one not finished its TPOT so far), so every percentile is too and `slo.met` fails."""
    reqs = [Request(i, float(a), int(p), int(o), beams=beams)
            for i, (a, p, o) in enumerate(zip(arrivals, prompt, output, strict=True))]
    sim = simulate_trace(reqs, compiled, stop=Breaks(slo, output) if slo else None)
    eng = sim.cluster.engines[0]
    seqs, now = eng.seqs, eng.now
    arr, out = np.asarray(arrivals, float), np.asarray(output, float)
    first, last, finish = (np.array([getattr(seqs[i], k) if i in seqs else None
                                     for i in range(len(reqs))], float)
                           for k in ("first_s", "last_s", "finish_s"))
    if sim.stopped:  # lower bounds (docstring)
        routed = np.array([i in seqs for i in range(len(reqs))])
        first = np.where(routed, np.where(np.isnan(first), now, first), arr)
        last = np.where(np.isnan(last), first, last)
        finish = np.where(routed, np.where(np.isnan(finish), now, finish), arr)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (last - first) / (out - 1), np.nan)
    return {"ttft_s": first - arr, "e2e_s": finish - arr, "tpot_s": tpot,
            "makespan_s": float(np.nanmax(finish) - arr.min()), "stopped": sim.stopped}


P99 = 0.99  # the 99th percentile as a fraction


class Breaks:
    """`simulate_trace`'s `stop` for one replica: True once the p99 TTFT or p99 TPOT of
    the whole run is certain to exceed `slo`'s limit. np.percentile's p99 of N values is
    at least the value at sorted index floor(P99 (N - 1)), so it exceeds a limit once
    N - that index values do. Counted: finished requests' TTFT / TPOT, and lower bounds of
    the rest (a waiting request's TTFT >= its wait so far; a decoding request's TPOT >=
    (last token - first token) / (output tokens - 1)). Finished requests are counted once."""

    def __init__(self, slo: SLO, output: np.ndarray):
        out = np.asarray(output)
        self.slo, self.out = slo, out

        def need(n: int) -> int:
            return n - math.floor(P99 * (n - 1)) if n else 1 << 62
        self.need_ttft, self.need_tpot = need(len(out)), need(int((out > 1).sum()))
        self.seen, self.open = 0, []
        self.ttft_bad = self.tpot_bad = 0  # violations among finished requests

    def __call__(self, cluster) -> bool:
        eng = cluster.engines[0]
        ids = list(eng.seqs)
        self.open += [eng.seqs[i] for i in ids[self.seen:]]
        self.seen = len(ids)
        ttft_ms, tpot_ms, now = self.slo.ttft_ms, self.slo.tpot_ms, eng.now
        ttft_bad, tpot_bad, still = self.ttft_bad, self.tpot_bad, []
        for s in self.open:
            a, f, o = s.req.arrival_s, s.first_s, s.req.output_tokens
            t = ttft_ms is not None and ((now if f is None else f) - a) * 1e3 > ttft_ms
            p = (tpot_ms is not None and f is not None and o > 1
                 and (s.last_s - f) * 1e3 > tpot_ms * (o - 1))
            ttft_bad += t
            tpot_bad += p
            if s.finish_s is None:
                still.append(s)
            else:
                self.ttft_bad += t
                self.tpot_bad += p
        self.open = still
        return ttft_bad >= self.need_ttft or tpot_bad >= self.need_tpot


def metrics(result: dict, output: np.ndarray) -> dict[str, float]:
    """vLLM-bench-style latency summary (ms) of one `run`."""
    out = np.asarray(output)
    ttft = result["ttft_s"] * 1e3
    tpot = result["tpot_s"][~np.isnan(result["tpot_s"])] * 1e3
    if not tpot.size:
        tpot = np.zeros(1)
    m = {"requests": int(len(out)), "makespan_s": result["makespan_s"],
         "output_tokens_per_s": float(out.sum() / max(result["makespan_s"], 1e-12))}
    for name, v in (("ttft", ttft), ("tpot", tpot)):
        m[f"mean_{name}_ms"] = float(v.mean())
        for q in (50, 90, 99):
            m[f"p{q}_{name}_ms"] = float(np.percentile(v, q))
    return m


def probe(compiled: Compiled, arrivals: np.ndarray, prompt: np.ndarray,
          output: np.ndarray, slo: SLO | None = None) -> dict[str, float]:
    """Simulate one replica on these requests; the latency summary (with `slo`: stopped
    once it certainly breaks it, `stopped` True and the latencies lower bounds, `run`)."""
    result = run(compiled, arrivals, prompt, output, slo)
    return {**metrics(result, output), "stopped": result["stopped"]}


def probe_at(compiled: Compiled, prompt: np.ndarray, output: np.ndarray,
             arrivals: np.ndarray, slo: SLO | None = None) -> dict[str, float]:
    """`probe` of the first len(`arrivals`) requests (a sample's `arrive(rate)` may keep
    only a window of them: `poisson_sample`'s `duration_s`)."""
    n = len(arrivals)
    return probe(compiled, arrivals, prompt[:n], output[:n], slo)


def saturation_rps(compiled: Compiled, prompt: np.ndarray, output: np.ndarray,
                   beams: int = 1) -> float:
    """Requests/s one replica completes when every request is queued at t = 0 (MLPerf's
    Offline scenario: requests / time to the last completion, the drain included): the
    first value of `offline_rates`."""
    return offline_rates(compiled, prompt, output, beams)[0]


#: completed shares between which `offline_rates` counts the steady completion rate
STEADY = (0.2, 0.8)


def offline_rates(compiled: Compiled, prompt: np.ndarray, output: np.ndarray,
                  beams: int = 1) -> tuple[float, float]:
    """(Offline, steady) requests/s of one replica with every request queued at t = 0.
    Offline: requests / time to the last completion (`saturation_rps`). Steady: the
    completion rate between the STEADY shares of completions, i.e. without the first wave
    (the requests admitted at t = 0 finish together) and the drain (the last long outputs
    run in a small batch). The steady rate is the rate a saturated replica sustains; it is
    meaningful when the requests far outnumber what the KV cache holds at once (with a
    few hundred requests it overstates it: they all finish in the first wave)."""
    e2e = np.sort(run(compiled, np.zeros(len(prompt)), prompt, output, beams=beams)["e2e_s"])
    n = len(e2e)
    a, b = (min(int(f * n), n - 1) for f in STEADY)
    steady = (b - a) / (e2e[b] - e2e[a]) if e2e[b] > e2e[a] else n / e2e[-1]
    return float(n / e2e[-1]), float(steady)


@dataclass
class Capacity:
    """A capacity search's answer: the max rate per seed and every probe made."""

    rate: float  # median over seeds of the highest SLO-compliant rate (req/s, all replicas)
    low: float  # min over seeds
    high: float  # max over seeds
    per_seed: list[float]
    slo: SLO
    replicas: int
    probes: list[dict] = field(default_factory=list)  # rate, seed, met, latency summary
    saturation_rps: float = 0.0  # Offline throughput (req/s, all replicas), median of seeds
    saturation_per_seed: list[float] = field(default_factory=list)


def poisson_sample(workload: str = "sharegpt", requests: int = 1000, replicas: int = 1,
                   duration_s: float | None = None, min_requests: int = 100):
    """`sample(seed) -> (prompt, output, arrive)` of `capacity`: `requests` lengths of
    `workload` for the one replica simulated; `arrive(rate)` its Poisson arrivals when the
    whole deployment gets `rate` req/s (random routing: rate / replicas each).

    With `duration_s` (MLPerf's Server rule: a run lasts at least `min_duration` and
    `min_query_count` queries), `arrive(rate)` keeps only the arrivals of the first
    `duration_s` seconds, at least `min_requests` of them: a probe at a higher rate runs
    more requests, each probe the same length of time. The `requests` drawn are the pool;
    a rate whose `duration_s` needs more gets the whole pool (size it for the highest rate
    probed: the upper end of `capacity`'s bracket x `duration_s`)."""
    if duration_s is not None and not duration_s > 0:
        raise InvalidInputError(f"duration_s={duration_s!r} must be > 0 s")

    def sample(seed: int):
        prompt, output = lengths(workload, requests, seed=seed)

        def arrive(rate: float) -> np.ndarray:
            arr = poisson_arrivals(requests, rate / replicas, seed)
            if duration_s is None:
                return arr
            return arr[:max(int(np.searchsorted(arr, duration_s)), min_requests)]
        return prompt, output, arrive
    return sample


def trace_sample(arrival_s, prompt, output, replicas: int = 1):
    """`sample(seed)` of `capacity` for a recorded trace: its requests dealt at random (by
    `seed`) to `replicas` replicas, the first one simulated; `arrive(rate)` compresses or
    stretches the trace's arrival times so the whole trace comes at `rate` req/s (its shape
    kept: a trace rate scale of rate / the trace's own mean rate)."""
    t = np.asarray(arrival_s, float) - np.min(arrival_s)
    p, o = np.asarray(prompt), np.asarray(output)
    if len(t) < 2 or t.max() <= 0:
        raise InvalidInputError("the trace needs at least two distinct arrival times")
    base = (len(t) - 1) / t.max()

    def sample(seed: int):
        mine = np.random.default_rng(seed).integers(0, replicas, len(t)) == 0
        if mine.sum() < 2:
            raise InvalidInputError(f"{replicas} replicas leave fewer than 2 requests of the "
                                    f"{len(t)}-request trace to each; use fewer replicas")
        return p[mine], o[mine], lambda rate: t[mine] * (base / rate)
    sample.base_rate = base
    sample.deterministic = replicas == 1  # one replica gets the whole trace: seeds agree
    return sample


def capacity(compiled: Compiled, slo: SLO, sample=None, seeds: int = 3, replicas: int = 1,
             rel_tol: float = 0.02, lowest: float = 0.02,
             upper_rps: float | None = None, floor_rps: float | None = None) -> Capacity:
    """The highest rate (req/s over `replicas` replicas) meeting `slo`, per seed.

    `sample(seed) -> (prompt, output, arrive)`: the simulated replica's requests and
    `arrive(rate)` their arrival times (`poisson_sample`, default the ShareGPT workload;
    `trace_sample`; one seed when the sample does not depend on it; a probe simulates the
    first len(arrive(rate)) requests). The bracket is [lowest x S, S], S the deployment's
    Offline throughput (`upper_rps` per replica when given, e.g. `offline_rates`' steady
    rate of a long run; else that of each seed's requests all queued at once): at S or
    above the queue grows without bound, so S counts as failing. It is bisected
    until its width is under `rel_tol` x its upper end; the lowest rate is probed only
    when a probe fails before any has held. A probe that certainly breaks the SLO stops
    its simulation there (`run` with `slo`; `stopped` in its record).
    Early stopping: once a seed has an answer, the next seed first probes the bracket the
    seeds before it ended in (the median of their highest holding rates, the median of
    their lowest failing ones, when that is below S); when the lower end holds and the
    upper fails, that bracket is the answer after 2 probes instead of the ~7 of a full
    bisection (otherwise the bisection goes on from what the two probes showed). A seed
    with the same requests as the first therefore ends in the first's bracket. Raises
    SLOUnreachableError when the lowest rate fails, naming the p99s reached there.
    `floor_rps`: only whether the answer reaches it matters (`max_batch`, which
    compares deployments against the best so far): each seed first probes it; a seed where
    it fails answers 0 (below the floor, not searched further), one where it holds bisects
    [floor_rps, S].
    """
    if not (isinstance(seeds, int) and seeds >= 1 and isinstance(replicas, int)
            and replicas >= 1):
        raise InvalidInputError(f"seeds={seeds!r} and replicas={replicas!r} must be "
                                "positive integers")
    if not 0 < rel_tol < 1 or not 0 < lowest < 1:
        raise InvalidInputError("rel_tol and lowest must be in (0, 1)")
    sample = sample or poisson_sample(replicas=replicas)
    if getattr(sample, "deterministic", False):
        seeds = 1  # every seed would simulate the same requests at the same times
    probes: list[dict] = []
    per_seed: list[float] = []
    fails: list[float] = []  # each seed's lowest failing rate (S when none was probed)
    sats: list[float] = []
    for seed in range(seeds):
        prompt, output, arrive = sample(seed)
        sat = (upper_rps or saturation_rps(compiled, prompt, output)) * replicas
        sats.append(sat)

        def test(rate: float, seed=seed, prompt=prompt, output=output, arrive=arrive) -> bool:
            m = probe_at(compiled, prompt, output, arrive(rate), slo)
            ok = slo.met(m)
            probes.append({"rate": rate, "seed": seed, "met": ok, **m})
            return ok

        lo, hi = lowest * sat, sat
        lo_holds = False
        if floor_rps is not None:  # docstring; S itself counts as failing
            if floor_rps >= sat or not test(floor_rps):
                per_seed.append(0.0)
                fails.append(floor_rps)
                continue
            lo, lo_holds = floor_rps, True
        a, b = (float(np.median(per_seed)), float(np.median(fails))) if per_seed else (0, 0)
        if (lo if lo_holds else 0) < a < b < sat:  # early stop (docstring)
            if test(a):
                lo, lo_holds = a, True
                if test(b):
                    lo = b
                else:
                    hi = b
            else:
                hi = a
        while (hi - lo) > rel_tol * hi:
            mid = 0.5 * (lo + hi)
            if test(mid):
                lo, lo_holds = mid, True
                continue
            hi = mid
            if not lo_holds and not test(lo):  # the lowest rate, probed once it matters
                worst = probes[-1]
                more = " at least" if worst["stopped"] else ""
                raise SLOUnreachableError(
                    f"no rate meets {slo.text()}: at the lowest rate probed ({lo:.3g} "
                    f"req/s) the p99 TTFT is{more} {worst['p99_ttft_ms']:.1f} ms and p99 "
                    f"TPOT{more} {worst['p99_tpot_ms']:.1f} ms; relax the SLO, raise --tp "
                    "or pick a faster GPU")
            lo_holds = True
        per_seed.append(lo)
        fails.append(hi)
    return Capacity(rate=float(np.median(per_seed)), low=min(per_seed), high=max(per_seed),
                    per_seed=per_seed, slo=slo, replicas=replicas, probes=probes,
                    saturation_rps=float(np.median(sats)), saturation_per_seed=sats)


def load_curve(compiled: Compiled, sample=None, rates: list[float] | None = None,
               seed: int = 0, replicas: int = 1) -> list[dict]:
    """Latency vs load: the latency summary at each of `rates` (req/s over `replicas`;
    default 10%..100% of the Offline throughput in 10 steps); `load` = rate / that.
    `sample` as in `capacity`."""
    prompt, output, arrive = (sample or poisson_sample(replicas=replicas))(seed)
    sat = saturation_rps(compiled, prompt, output) * replicas
    rates = rates or [sat * f for f in np.linspace(0.1, 1.0, 10)]
    out = []
    for r in rates:
        if not r > 0:
            raise InvalidInputError(f"rate {r!r} must be > 0")
        out.append({"rate": float(r), "load": r / sat,
                    **probe_at(compiled, prompt, output, arrive(r))})
    return out


# -- planning -------------------------------------------------------------------------------
TPS = (1, 2, 4, 8)


def plan(deployment: Deployment, gpus: list[str], slo: SLO, rate: float | None = None,
         workload: str = "sharegpt", requests: int = 500, seeds: int = 2,
         tps: tuple[int, ...] = TPS, price_per_gpu_hour: dict[str, float] | None = None,
         runtime=None, trace: tuple | None = None) -> list[dict]:
    """For each GPU type and TP at which `deployment`'s model fits: the replicas needed to
    serve a Poisson `rate` (req/s) of `workload`, or a recorded `trace` ((arrival_s,
    prompt, output); at `rate` when given, else at its own mean rate), within `slo`.

    Replicas = ceil(rate / one replica's capacity on that load, its lowest over seeds);
    random routing. For a trace that count is then refined by simulating one replica's
    random share of the trace at its rate (`_enough_replicas`). GPUs = replicas x TP;
    with `price_per_gpu_hour` (GPU name -> price), the cost per hour. `best` marks each
    GPU type's fewest GPUs (ties: the lower TP). A (GPU, TP) where the model does not fit
    or no rate meets the SLO has no GPU count and says why in `reason`."""
    if trace is not None:
        base = trace_sample(*trace)
        rate = rate or base.base_rate
    if rate is None or not rate > 0:
        raise InvalidInputError(f"rate={rate!r} req/s must be > 0")
    rows = []
    for gpu in gpus:
        for tp in tps:
            row = {"gpu": gpu, "tp": tp, "replicas": None, "gpus": None, "replica_rps": None,
                   "cost_per_hour": None, "reason": "", "best": False}
            rows.append(row)
            try:
                compiled = compile_replica(replace(deployment, gpu=gpu, tp=tp), runtime)
                load = base if trace is not None else poisson_sample(workload, requests)
                cap = capacity(compiled, slo, load, seeds)
                n = math.ceil(rate / cap.low)
                if trace is not None:
                    n = _enough_replicas(compiled, slo, trace, rate, n)
            except InvalidInputError as e:  # does not fit / no rate meets the SLO
                row["reason"] = str(e)
                continue
            row.update(replicas=n, gpus=n * tp, replica_rps=cap.low)
            price = (price_per_gpu_hour or {}).get(gpu)
            if price is not None:
                row["cost_per_hour"] = n * tp * price
    for gpu in gpus:
        ok = [r for r in rows if r["gpu"] == gpu and r["gpus"]]
        if ok:
            min(ok, key=lambda r: (r["gpus"], r["tp"]))["best"] = True
    return rows


def _enough_replicas(compiled: Compiled, slo: SLO, trace: tuple, rate: float, n: int) -> int:
    """The fewest replicas R such that the simulated replica's random share of `trace` at
    `rate` meets `slo` (seed 0): bisection on R in [1, n] when n replicas meet it (a
    bursty trace spreads over replicas, so n from one replica's capacity can be too many),
    else n + 1 .. n + 4; InvalidInputError when none of those does."""
    def ok(r: int) -> bool:
        if r > len(trace[0]) // 2:
            return False  # fewer than 2 requests a replica: not simulated
        prompt, output, arrive = trace_sample(*trace, replicas=r)(0)
        return slo.met(probe(compiled, arrive(rate), prompt, output, slo))

    if not ok(n):
        for r in range(n + 1, n + 5):
            if ok(r):
                return r
        raise InvalidInputError(f"{n}-{n + 4} replicas do not serve the trace within "
                                f"{slo.text()}")
    lo, hi = 0, n  # hi meets the SLO; lo does not (0 replicas)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi
