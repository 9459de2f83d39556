"""Mooncake prefix reuse and LRU hit ratios against an independent pure-Python replay."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest

from servecast.analytics import prefix_cache

MOONCAKE = "llm/mooncake/conversation_trace.jsonl"


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    from servecast.store import Store

    s = Store(tmp_path_factory.mktemp("mc") / "mc.duckdb")
    s.ingest("mooncake", [data / MOONCAKE], trace="mooncake")
    yield s
    s.close()


@pytest.fixture(scope="module")
def requests(data) -> list[list[int]]:
    rows = [json.loads(line) for line in open(data / MOONCAKE) if line.strip()]
    rows = sorted(enumerate(rows), key=lambda ir: (ir[1]["timestamp"], ir[0]))
    return [r["hash_ids"] for _, r in rows]


def lru_replay(requests: list[list[int]], capacity: int) -> float:
    cache: OrderedDict[int, None] = OrderedDict()
    hits = total = 0
    for blocks in requests:
        for b in blocks:
            total += 1
            if b in cache:
                hits += 1
                cache.move_to_end(b)
            else:
                cache[b] = None
                if len(cache) > capacity:
                    cache.popitem(last=False)
    return hits / total


def test_prefix_reuse_matches_replay(store, requests):
    seen: set[int] = set()
    reused = total = 0
    req_with_reuse = 0
    for blocks in requests:
        r = sum(b in seen for b in blocks)
        req_with_reuse += r > 0
        reused += r
        total += len(blocks)
        seen.update(blocks)
    res = prefix_cache.prefix_reuse(store, "mooncake")
    assert res["block_accesses"] == total and res["unique_blocks"] == len(seen)
    assert res["reuse_share"] == pytest.approx(reused / total, abs=1e-12)
    assert res["requests_with_reuse_share"] == pytest.approx(req_with_reuse / len(requests))


@pytest.mark.parametrize("capacity", [8, 100, 1000, 20_000])
def test_lru_hit_ratio_matches_replay(store, requests, capacity):
    ours = prefix_cache.lru_hit_ratios(store, "mooncake", capacities=[capacity])
    assert ours["hit_ratio"].item() == pytest.approx(lru_replay(requests, capacity), abs=1e-12)


def test_stack_distances_known_sequence():
    # a b c a b d a : a at 3 saw {b, c} -> 2; b at 4 saw {c, a} -> 2; a at 6 saw {b, d} -> 2
    d = prefix_cache.stack_distances(np.array([1, 2, 3, 1, 2, 4, 1]))
    assert d.tolist() == [-1, -1, -1, 2, 2, -1, 2]
    assert prefix_cache.default_capacities(100) == [16, 32, 64, 100]
