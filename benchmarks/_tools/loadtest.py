"""A bounded closed-loop HTTP load generator: a fixed number of POSTs over a few keep-alive
connections (one thread each). Latencies in ms, throughput in requests/s."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class LoadResult:
    """Outcome of `post_load`: counts, wall time (s), per-request latencies (ms)."""

    requests: int
    errors: int
    wall_s: float
    latencies_ms: np.ndarray
    statuses: dict[int, int]
    last_body: dict | None

    @property
    def throughput(self) -> float:
        """Completed requests per second of wall time."""
        return self.requests / self.wall_s

    def quantile_ms(self, q: float) -> float:
        return float(np.quantile(self.latencies_ms, q))


def post_load(url: str, body: dict, requests: int = 2000, connections: int = 4,
              warmup: int = 50) -> LoadResult:
    """POST `body` to `url` `requests` times over `connections` keep-alive connections.

    Each connection first sends `warmup` untimed requests. Non-200 answers count as errors.
    """
    import httpx

    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    per = [requests // connections + (i < requests % connections) for i in range(connections)]
    lat: list[list[float]] = [[] for _ in range(connections)]
    statuses: dict[int, int] = {}
    last: list[dict | None] = [None]
    lock = threading.Lock()
    start = threading.Barrier(connections + 1)

    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            run(i)
        except BaseException as e:  # surface it in the caller, release the others
            failures.append(e)
            start.abort()

    def run(i: int) -> None:
        with httpx.Client(timeout=30.0) as client:
            for _ in range(warmup):
                client.post(url, content=payload, headers=headers)
            start.wait()
            mine: dict[int, int] = {}
            for _ in range(per[i]):
                t0 = time.perf_counter()
                r = client.post(url, content=payload, headers=headers)
                lat[i].append((time.perf_counter() - t0) * 1e3)
                mine[r.status_code] = mine.get(r.status_code, 0) + 1
            with lock:
                for k, v in mine.items():
                    statuses[k] = statuses.get(k, 0) + v
                last[0] = r.json()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise failures[0]
    errors = sum(v for k, v in statuses.items() if k != 200)
    return LoadResult(requests, errors, wall, np.concatenate([np.asarray(x) for x in lat]),
                      statuses, last[0])
