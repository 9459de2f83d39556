"""Named workloads: request length distributions to simulate (`workload:NAME`).

`sharegpt`: the real ShareGPT prompt / decode token-count pairs of the shared data
(`llm/length_stats/sharegpt_8k_filtered_stats_llama2_tokenizer.csv`, Llama-2 tokenizer, from
Sarathi-Serve / Vidur), drawn as pairs. Other modules add theirs with `register` (MLPerf's
benchmark workloads: `simulator.benchmark_workloads`, registered on import of this module).
Lengths in tokens, times in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from servecast.config import data_dir
from servecast.errors import DataFileError, InvalidInputError, UnknownNameError

#: the ShareGPT length pairs (relative to the shared data folder)
SHAREGPT = "llm/length_stats/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"

#: `draw(prompt, output, pick) -> (prompt, output)`: a workload's lengths from the ShareGPT
#: pairs `prompt[pick]`, `output[pick]` (the shape) and the whole pair arrays
Draw = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Workload:
    """A named length distribution: `dataset` says what the requests are, `source` where the
    numbers come from; `draw` reshapes the drawn ShareGPT pairs (None: as recorded)."""

    name: str
    dataset: str
    source: str
    draw: Draw | None = None


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("sharegpt", "ShareGPT conversations (Llama-2 tokenizer), as recorded",
             f"shared data {SHAREGPT}"),
]}


def register(workload: Workload) -> None:
    """Add (or replace) a named workload."""
    WORKLOADS[workload.name] = workload


def names() -> list[str]:
    """The registered workload names."""
    return sorted(WORKLOADS)


def get(name: str) -> Workload:
    """Workload `name` (UnknownNameError lists the known ones)."""
    if name not in WORKLOADS:
        raise UnknownNameError(f"unknown workload {name!r}; known workloads: "
                               f"{', '.join(names())}")
    return WORKLOADS[name]


@cache
def pairs(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ShareGPT (prompt, output) token counts under the shared data folder `root`."""
    path = root / SHAREGPT
    if not path.is_file():
        raise DataFileError(f"{path}: not found; the named workloads read ShareGPT's token "
                            "counts there: set $SERVECAST_DATA to the shared data folder")
    data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1), ndmin=2)
    return data[:, 0], data[:, 1]


def lengths(name: str, n: int, seed: int = 0, root: Path | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """`n` (prompt, output) token-count pairs of workload `name`, drawn with `seed`."""
    w = get(name)
    if not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n={n!r} requests: give a positive integer")
    prompt, output = pairs(root or data_dir())
    pick = np.random.default_rng(seed).integers(0, len(prompt), n)
    if w.draw is not None:
        prompt, output = w.draw(prompt, output, pick)
    else:
        prompt, output = prompt[pick], output[pick]
    return (np.maximum(np.rint(prompt), 1).astype(np.int64),
            np.maximum(np.rint(output), 1).astype(np.int64))


def poisson_arrivals(n: int, rate: float, seed: int = 0) -> np.ndarray:
    """`n` Poisson arrival times (s) at `rate` requests/s, the first at 0."""
    if not rate > 0:
        raise InvalidInputError(f"rate={rate!r} requests/s must be > 0")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


# MLPerf's benchmark workloads join the registry whenever this module is imported
from servecast.simulator import benchmark_workloads  # noqa: E402, F401
