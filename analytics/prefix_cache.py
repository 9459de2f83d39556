"""Prefix reuse of Mooncake-style traces (`prefix_hashes`: ids of 512-token prefix blocks).

Requests are replayed in arrival order; every request touches each of its blocks in order.
A block access "reuses" a prefix block when that block id was seen earlier in the trace.
An LRU cache of N blocks hits on an access when the block is among the N most recently used
distinct blocks; one pass computes every access's LRU stack distance (Mattson et al. 1970),
which gives the hit ratio of every capacity N at once.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.analytics.source import source


def block_accesses(src, trace: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(block ids in access order, request index of each access), requests in arrival order.
    Requests without prefix_hashes contribute nothing."""
    s = source(src, trace, "llm_requests")
    df = s.sql("""
        SELECT r, unnest(prefix_hashes) AS block, generate_subscripts(prefix_hashes, 1) AS pos
        FROM (SELECT row_number() OVER (ORDER BY arrival_s, request_id) - 1 AS r, prefix_hashes
              FROM t WHERE prefix_hashes IS NOT NULL AND len(prefix_hashes) > 0)
        ORDER BY r, pos""")
    return df["block"].to_numpy(), df["r"].to_numpy()


def stack_distances(blocks: np.ndarray) -> np.ndarray:
    """LRU stack distance of each access: the number of distinct other blocks used since the
    previous access of the same block (-1 for a first access). A cache of N blocks hits
    exactly the accesses with 0 <= distance < N."""
    n = len(blocks)
    tree = [0] * (n + 1)  # Fenwick tree over access positions: 1 at each block's latest access
    last: dict[int, int] = {}
    out = np.full(n, -1, dtype=np.int64)
    for i, b in enumerate(blocks.tolist()):
        p = last.get(b)
        if p is not None:
            # distinct blocks accessed in (p, i) = latest-access markers after p
            total = 0
            j = i  # prefix sum over positions [0, i)
            while j > 0:
                total += tree[j]
                j -= j & -j
            upto = 0
            j = p + 1  # prefix sum over positions [0, p]
            while j > 0:
                upto += tree[j]
                j -= j & -j
            out[i] = total - upto
            j = p + 1
            while j <= n:
                tree[j] -= 1
                j += j & -j
        j = i + 1
        while j <= n:
            tree[j] += 1
            j += j & -j
        last[b] = i
    return out


def prefix_reuse(src, trace: str | None = None) -> dict:
    """Prefix-block reuse over the trace.

    Returns requests (with blocks), block_accesses, unique_blocks, reuse_share (share of
    block accesses whose block was seen before = hit ratio of an unbounded cache),
    requests_with_reuse_share (requests reusing at least one block) and mean_request_reuse
    (mean over requests of the share of their blocks seen before).
    """
    blocks, req = block_accesses(src, trace)
    if blocks.size == 0:
        return {"requests": 0, "block_accesses": 0, "unique_blocks": 0, "reuse_share": None,
                "requests_with_reuse_share": None, "mean_request_reuse": None}
    _, first = np.unique(blocks, return_index=True)
    seen = np.ones(blocks.size, dtype=bool)
    seen[first] = False
    per_req = pl.DataFrame({"r": req, "seen": seen}).group_by("r").agg(pl.col("seen").mean())
    return {
        "requests": int(per_req.height),
        "block_accesses": int(blocks.size),
        "unique_blocks": int(first.size),
        "reuse_share": float(seen.mean()),
        "requests_with_reuse_share": float((per_req["seen"] > 0).mean()),
        "mean_request_reuse": float(per_req["seen"].mean()),
    }


def default_capacities(unique_blocks: int) -> list[int]:
    """Powers of two from 16 blocks up to the number of unique blocks."""
    caps, c = [], 16
    while c < unique_blocks:
        caps.append(c)
        c *= 2
    return caps + [max(unique_blocks, 1)]


def lru_hit_ratios(src, trace: str | None = None,
                   capacities: list[int] | None = None) -> pl.DataFrame:
    """Block hit ratio of an LRU prefix cache of N blocks, for each N in `capacities`
    (default: powers of two up to the number of unique blocks).

    Columns: capacity_blocks, capacity_tokens (x 512), hit_ratio (hits / block accesses).
    """
    blocks, _ = block_accesses(src, trace)
    if blocks.size == 0:
        return pl.DataFrame(schema={"capacity_blocks": pl.Int64, "capacity_tokens": pl.Int64,
                                    "hit_ratio": pl.Float64})
    caps = capacities or default_capacities(int(np.unique(blocks).size))
    dist = stack_distances(blocks)
    hits = np.sort(dist[dist >= 0])
    ratios = [np.searchsorted(hits, c, side="left") / blocks.size for c in caps]
    return pl.DataFrame({"capacity_blocks": [int(c) for c in caps],
                         "capacity_tokens": [int(c) * 512 for c in caps],
                         "hit_ratio": [float(r) for r in ratios]})
