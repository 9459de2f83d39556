"""Real-time driver: steps the simulator's engines on the wall clock.

Simulated time 0 is the driver's start; a request arrives at the wall-clock second it is
submitted. Each replica runs one asyncio task: while its engine has work it runs one
iteration (`step()`), sleeps until the iteration's simulated end, then hands one token to
every request the iteration produced one for (and marks the finished). A request submitted
during an iteration joins the next one, as in a serving engine. The engine's clock is never
moved by the wall clock, so the times it records (and the per-request log) equal an offline
simulation of the same arrivals; the wall clock only lags it by the event loop's latency.

The engine sits behind `Fleet` (add / step of the simulator's `Cluster`), the one place that
knows the simulator's API. Times in seconds, lengths in tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from servecast.errors import InvalidInputError
from servecast.simulator.cluster import Cluster
from servecast.simulator.core import Request
from servecast.simulator.deployment import Compiled
from servecast.simulator.policies import priority_key


class Fleet:
    """The simulated replicas under `policy` and `router` (`predicts`: requests come with
    predicted p50 / p90 output tokens, which the SJF-by-prediction and kv_p90 policies
    need; without, such a policy is refused here): `route(request) -> replica` (the
    router's pick),
    `add(replica, request)`, `engine(replica)` (its `now`, `idle`, `step()`),
    `times(request_id)`: the simulated (arrival, first token, finish) s of a finished
    request, `kv_tokens`: what one replica's KV cache admits for one request (the engine's
    `request_kv_tokens`), `replica_kv_tokens`: the tokens of one replica's KV blocks."""

    def __init__(self, compiled: Compiled, policy: str = "fcfs", router: str = "round_robin",
                 predicts: bool = False):
        self.cluster = Cluster(compiled, policy, router)
        if not predicts:  # a policy that reads predictions refuses a request without them
            priority_key(policy, Request(-1, 0.0, 1, 1), 0.0)
        self.replicas = len(self.cluster.engines)
        e = self.cluster.engines[0]
        self.kv_tokens = e.request_kv_tokens
        self.replica_kv_tokens = e.total * e.bs

    def describe(self) -> str:
        """One replica's KV cache in the words the emulator prints at start-up."""
        return (f"{self.replica_kv_tokens:,} KV tokens per replica, at most "
                f"{self.kv_tokens:,} per request")

    @staticmethod
    def request(request_id: int, arrival_s: float, prompt_tokens: int, output_tokens: int,
                p50: float = float("nan"), p90: float = float("nan")) -> Request:
        return Request(request_id, arrival_s, prompt_tokens, output_tokens, p50=p50, p90=p90)

    def route(self, req: Request) -> int:
        k = self.cluster.engines.index(self.cluster.router.pick(req))
        self.cluster.replica_of[req.request_id] = k
        return k

    def add(self, replica: int, req: Request) -> None:
        self.cluster.engines[replica].add(req)

    def engine(self, replica: int):
        return self.cluster.engines[replica]

    def times(self, request_id: int) -> tuple[float, float, float]:
        seq = self.engine(self.cluster.replica_of[request_id]).seqs[request_id]
        return seq.req.arrival_s, seq.first_s, seq.finish_s


@dataclass
class Stream:
    """One request in flight: `tokens` gets the simulated time of each token, then None;
    `replica` is set when the request is routed."""

    request_id: int
    prompt_tokens: int
    output_tokens: int
    replica: int = -1
    tokens: asyncio.Queue = field(default_factory=asyncio.Queue)


class Driver:
    """Steps a `Fleet` in real time. `start()` / `stop()` inside the event loop;
    `submit(prompt_tokens, output_tokens) -> Stream` (raises the simulator's
    InvalidInputError for a request that no replica can hold). `log`: a JSONL file that
    gets one line per finished request with its simulated times (`record`)."""

    def __init__(self, fleet: Fleet, log: Path | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.fleet, self.clock, self.log_path = fleet, clock, log
        self.t0 = clock()
        self.streams: dict[int, Stream] = {}
        self._ids = itertools.count()
        self._wake: list[asyncio.Event] = []
        self._pending: list[tuple[Request, Stream]] = []  # arrived, not yet routed
        self._tasks: list[asyncio.Task] = []
        self._log = None
        self.finished = 0

    def now(self) -> float:
        """Simulated seconds since the start (= wall seconds)."""
        return self.clock() - self.t0

    async def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("a", encoding="utf-8")
        self.t0 = self.clock()
        self._wake = [asyncio.Event() for _ in range(self.fleet.replicas)]
        self._tasks = [asyncio.create_task(self._run(k)) for k in range(self.fleet.replicas)]
        for t in self._tasks:
            t.add_done_callback(_report_crash)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._log is not None:
            self._log.close()

    def submit(self, prompt_tokens: int, output_tokens: int, p50: float = float("nan"),
               p90: float = float("nan")) -> Stream:
        """Queue a request arriving now (`p50` / `p90`: its predicted output tokens, for the
        policies that read them); InvalidInputError when prompt + output tokens exceed what
        one replica's KV cache holds."""
        if prompt_tokens + output_tokens > self.fleet.kv_tokens:
            raise InvalidInputError(
                f"{prompt_tokens:,} prompt + {output_tokens:,} output tokens exceed the "
                f"{self.fleet.kv_tokens:,} KV tokens one replica holds; lower max_tokens or "
                "shorten the prompt")
        rid = next(self._ids)
        req = self.fleet.request(rid, self.now(), prompt_tokens, output_tokens, p50, p90)
        stream = Stream(rid, prompt_tokens, output_tokens)
        self.streams[rid] = stream
        self._pending.append((req, stream))
        self._dispatch()
        return stream

    def _dispatch(self) -> None:
        """Route and queue the arrived requests, in arrival order, once every busy
        engine's next iteration starts at or after the arrival: the router then sees the
        replicas as the offline simulation does at that time, and no iteration that began
        before the arrival gets the request. (On time, that is at once; when the event
        loop is late to start an iteration, the request waits for it.)"""
        engines = [self.fleet.engine(k) for k in range(self.fleet.replicas)]
        while self._pending and all(e.idle or e.now >= self._pending[0][0].arrival_s
                                    for e in engines):
            req, stream = self._pending.pop(0)
            stream.replica = self.fleet.route(req)
            self.fleet.add(stream.replica, req)
            self._wake[stream.replica].set()

    def record(self, stream: Stream) -> dict:
        """A finished request's simulated times: arrival_s (since the start), ttft_ms,
        tpot_ms (mean gap after the first token; 0 for one token), e2el_ms, replica."""
        arrival, first, finish = self.fleet.times(stream.request_id)
        n = stream.output_tokens
        return {"request_id": stream.request_id, "replica": stream.replica,
                "arrival_s": arrival, "prompt_tokens": stream.prompt_tokens,
                "output_tokens": n, "ttft_ms": 1e3 * (first - arrival),
                "tpot_ms": 1e3 * (finish - first) / (n - 1) if n > 1 else 0.0,
                "e2el_ms": 1e3 * (finish - arrival)}

    async def _run(self, k: int) -> None:
        engine, wake = self.fleet.engine(k), self._wake[k]
        while True:
            if engine.idle:
                wake.clear()
                await wake.wait()
                continue
            step = engine.step()
            if step is None:
                continue
            self._dispatch()  # those waiting for this iteration to be computed
            end = step.start_s + step.duration_s
            while (delay := end - self.now()) > 0:  # uvloop's ms timers can wake early
                await asyncio.sleep(delay)
            for rid in step.token_ids:
                self.streams[rid].tokens.put_nowait(end)
            for rid in step.finished_ids:
                stream = self.streams.pop(rid)
                stream.tokens.put_nowait(None)
                self.finished += 1
                if self._log is not None:
                    self._log.write(json.dumps(self.record(stream)) + "\n")
                    self._log.flush()


def _report_crash(task: asyncio.Task) -> None:
    """Log a replica loop that died (its requests would otherwise hang silently)."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("servecast.emulator").error(
            "replica loop stopped", exc_info=task.exception())
