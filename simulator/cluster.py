"""Several replicas behind a router, and the batch simulation of a trace on them.

Routers (ROUTERS): `round_robin`; `least_tokens` (the replica with the fewest outstanding
tokens: prompt + output tokens of its unfinished requests); `prefix_affinity` (among the
replicas not overloaded, i.e. with at most twice the least outstanding tokens plus this
request's, the one whose prefix cache holds the longest prefix of the request's
`prefix_hashes`; ties and misses to the fewest outstanding tokens. Without the load bound a
prefix every request shares, a system prompt, would send everything to one replica).

`simulate_trace` replays requests in arrival order through the same step-wise `Engine` the
emulator drives: the event loop routes each arrival at its time and otherwise runs the
iteration of the replica whose next iteration starts first (decode-only stretches between
events in one go, `Engine.decode_until`, which gives the same result as single steps).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from servecast.errors import InvalidInputError
from servecast.simulator.core import Engine, Request, next_time
from servecast.simulator.deployment import Compiled, Deployment

ROUTERS = ("round_robin", "least_tokens", "prefix_affinity")
STOP_EVERY = 250  # requests routed between `simulate_trace`'s `stop` checks


class Router:
    """Picks the replica of each arriving request (`pick(request) -> Engine`)."""

    def __init__(self, name: str, engines: Sequence[Engine]):
        if name not in ROUTERS:
            raise InvalidInputError(f"unknown router {name!r}; known routers: "
                                    f"{', '.join(ROUTERS)}")
        self.name, self.engines = name, list(engines)
        self._cycle = itertools.cycle(range(len(self.engines)))

    def pick(self, req: Request) -> Engine:
        engines = self.engines
        if self.name == "round_robin":
            return engines[next(self._cycle)]
        if self.name == "prefix_affinity":
            bound = 2 * min(e.outstanding for e in engines) + req.prompt_tokens \
                + req.output_tokens
            return min((e for e in engines if e.outstanding <= bound),
                       key=lambda e: (-e.cached_prefix_tokens(req), e.outstanding))
        return min(engines, key=lambda e: e.outstanding)


class Cluster:
    """`replicas` engines of one compiled deployment behind a router; `add(request)` routes
    it (returns the replica index), `step()` runs the next iteration of the replica whose
    iteration starts first (None when all are idle) as (replica index, Step)."""

    def __init__(self, compiled: Compiled, policy: str = "fcfs", router: str = "round_robin",
                 aging_tokens_per_s: float = 2.0):
        n = compiled.deployment.replicas
        self.engines = [Engine(compiled, policy, aging_tokens_per_s) for _ in range(n)]
        self.router = Router(router, self.engines)
        self.replica_of: dict = {}

    def add(self, req: Request) -> int:
        e = self.router.pick(req)
        e.add(req)
        k = self.engines.index(e)
        self.replica_of[req.request_id] = k
        return k

    def step(self):
        _, e = next_time(self.engines)
        return None if e is None else (self.engines.index(e), e.step())


@dataclass
class SimRun:
    """A finished simulation: the engines (their `seqs` hold every request's times), the
    replica of each request, the deployment compiled, policy and router."""

    cluster: Cluster
    compiled: Compiled
    policy: str
    router: str
    requests: list
    stopped: bool = False  # ended early by `stop`


def simulate_trace(requests: Sequence[Request], deployment: Deployment | Compiled,
                   policy: str = "fcfs", router: str = "round_robin", runtime=None,
                   aging_tokens_per_s: float = 2.0,
                   progress: Callable[[int], None] | None = None,
                   stop: Callable[[Cluster], bool] | None = None) -> SimRun:
    """Serve `requests` (any order; replayed by arrival) on `deployment` and return the run
    (metrics: `servecast.simulator.metrics.summarize`). `runtime`: a step-time Runtime
    (None: physics only); `progress(n)` is called with the requests routed so far;
    `stop(cluster)`, asked every STOP_EVERY requests routed and once all are, ends the run
    early when it returns True (`SimRun.stopped`; unrouted requests have no times)."""
    compiled = deployment if isinstance(deployment, Compiled) else Compiled(deployment, runtime)
    if not len(requests):
        raise InvalidInputError("the trace has no requests to simulate")
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    cluster = Cluster(compiled, policy, router, aging_tokens_per_s)
    engines, n, i = cluster.engines, len(reqs), 0
    while True:
        arrival = reqs[i].arrival_s if i < n else float("inf")
        when, e = next_time(engines)
        if e is None or arrival <= when:
            if i == n:
                break
            cluster.add(reqs[i])
            i += 1
            if progress and (i % 1000 == 0 or i == n):
                progress(i)
            if stop and (i % STOP_EVERY == 0 or i == n) and stop(cluster):
                return SimRun(cluster, compiled, policy, router, reqs, stopped=True)
            continue
        if not e.decode_until(arrival):
            e.step()
    return SimRun(cluster, compiled, policy, router, reqs)
