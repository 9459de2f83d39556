"""Nested leave-one-GPU-out choice of the all-reduce physics constants (physics alone, no
residual): the loop that picks `AR_FLOOR_MS`, `LINK_LATENCY_MS` and `LINK_EFFICIENCY` of
`servecast.predictors.operator_latency.physics` without looking at a held-out GPU.

Every candidate of the grid (`--floor-us` x `--step-us` x `--efficiency`) scores the
physics-only median APE (%) of aiconfigurator's `allreduce` rows per GPU. For each outer
GPU (not read) the candidate is chosen by the median APE over the rows of its three
training GPUs ("chosen"); inside it, each training GPU in turn is scored with the candidate
chosen on the other two ("inner": the honest score of the choice). Prints per outer fold
the chosen constants and the inner scores, then the held-out GPU's score under its fold's
choice (report it, never choose by it), and the shipped constants' per-GPU scores.

    .venv/bin/python benchmarks/allreduce_inner_logo.py [--db FILE]
        [--floor-us 3 4 5 6 7] [--step-us 0 0.5 1 2 4 8] [--efficiency 0.5 ... 1]

Without --db it ingests ../shared/datasets/gpu/aiconfigurator into a temporary store.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inner_logo import sampled_frame  # noqa: E402

#: (constant, flag, default grid in the flag's units, units per ms)
GRID = (("AR_FLOOR_MS", "--floor-us", (3.0, 4.0, 5.0, 6.0, 7.0), 1e3),
        ("LINK_LATENCY_MS", "--step-us", (0.0, 0.5, 1.0, 2.0, 4.0, 8.0), 1e3),
        ("LINK_EFFICIENCY", "--efficiency", (0.5, 0.6, 0.7, 0.8, 0.9, 1.0), 1.0))


def ape(frame: pl.DataFrame, consts: dict[str, float]) -> dict[str, np.ndarray]:
    """Per GPU of `frame` (allreduce rows), the absolute percentage errors of the physics
    time with the physics constants set to `consts` (restored afterwards)."""
    from servecast import gpus
    from servecast.predictors.operator_latency import physics

    saved = {k: getattr(physics, k) for k in consts}
    try:
        for k, v in consts.items():
            setattr(physics, k, v)
        out = {}
        for (dev,), part in frame.group_by("device", maintain_order=True):
            t, _X = physics.features("allreduce", gpus.resolve_spec(dev),
                                     N=part["N"].to_numpy(), tp=part["tp"].to_numpy())
            y = part["latency_ms"].to_numpy()
            out[dev] = np.abs(t - y) / y * 100.0
        return out
    finally:
        for k, v in saved.items():
            setattr(physics, k, v)


def pooled(errors: dict[str, np.ndarray], devices) -> float:
    """Median APE (%) over the rows of `devices`."""
    return float(np.median(np.concatenate([errors[d] for d in devices])))


def choose(table: list[tuple[dict, dict]], devices) -> dict:
    """The candidate constants whose pooled median APE over `devices` is lowest (ties: the
    first in grid order)."""
    return min(table, key=lambda row: pooled(row[1], devices))[0]


def show(consts: dict) -> str:
    """`consts` in the flags' units."""
    return " ".join(f"{name}={consts[name] * scale:g}" for name, _f, _g, scale in GRID)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db")
    for _name, flag, grid, _scale in GRID:
        ap.add_argument(flag, nargs="+", type=float, default=list(grid))
    args = ap.parse_args()
    from servecast.predictors.operator_latency import physics

    t0 = time.time()
    frame = sampled_frame(args.db, ["allreduce"], 10**6, ["device", "op"], seed=0)
    axes = [[v / scale for v in getattr(args, flag[2:].replace("-", "_"))]
            for _n, flag, _g, scale in GRID]
    names = [name for name, *_rest in GRID]
    table = [(c, ape(frame, c)) for c in (dict(zip(names, vals, strict=True))
                                          for vals in itertools.product(*axes))]
    devices = sorted(set(frame["device"].to_list()))
    for outer in devices:
        train = [d for d in devices if d != outer]
        inner = {d: pooled(ape(frame, choose(table, [o for o in train if o != d])), [d])
                 for d in train}
        chosen = choose(table, train)
        print(f"outer {outer}: chosen {show(chosen)}; inner "
              + " ".join(f"{d} {v:.1f}" for d, v in inner.items())
              + f" (mean {np.mean(list(inner.values())):.1f}); held out "
              f"{pooled(ape(frame, chosen), [outer]):.1f}")
    shipped = {name: getattr(physics, name) for name in names}
    errors = ape(frame, shipped)
    print(f"shipped {show(shipped)}: "
          + " ".join(f"{d} {pooled(errors, [d]):.1f}" for d in devices))
    print(f"{len(table)} candidates, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
