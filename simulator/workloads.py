"""What a simulation serves: a trace in the store, a trace synthesized from one, or a named
benchmark workload, as a list of `Request`s.

TRACE forms (`load_requests`):
- `NAME`: the llm_requests rows of store trace NAME (arrival_s, prompt_tokens,
  output_tokens, prefix_hashes); failed rows and rows of 0 output tokens are left out;
- `synth:NAME`: a trace synthesized from store trace NAME (`analytics.synth`: arrivals per
  window and joint lengths, prefix hashes when the source has them) over `duration_s`;
- `workload:NAME`: a named workload of WORKLOADS (lengths from real data, `num_prompts`
  of them, Poisson arrivals at `rate` requests/s; inf = all at t=0, as `vllm bench serve`).
A finite `rate` re-times a store or synthesized trace too: Poisson arrivals at `rate`
requests/s in the trace's order (MLPerf's Server scenario), lengths and prefixes kept.
`rate_scale` multiplies the arrival rate of any of them (arrival times / rate_scale).
Predicted output lengths (p50, p90, for the SJF / KV policies) come from a saved
output-length model (`lengths_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from servecast.config import data_dir
from servecast.errors import DataFileError, InvalidInputError, UnknownNameError
from servecast.simulator.core import Request


@dataclass(frozen=True)
class Workload:
    """A named workload: `lengths(root, n, rng) -> (prompt, output)` token arrays drawn from
    real data under the shared data folder `root`."""

    description: str
    lengths: Callable[[Path, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _sharegpt(root: Path, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    path = root / "llm/length_stats/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
    if not path.is_file():
        raise DataFileError(f"{path}: not found; the sharegpt workload reads ShareGPT's "
                            "token counts (sarathi-serve / vidur processed traces) there: set "
                            "$SERVECAST_DATA to the shared data folder")
    df = pl.read_csv(path, columns=["num_prefill_tokens", "num_decode_tokens"])
    idx = rng.choice(df.height, size=n, replace=n > df.height)
    return (df["num_prefill_tokens"].to_numpy()[idx], df["num_decode_tokens"].to_numpy()[idx])


#: name -> Workload (others add theirs with `register`)
WORKLOADS: dict[str, Workload] = {
    "sharegpt": Workload("ShareGPT conversations (Llama-2 tokenizer counts of sarathi-serve / "
                         "vidur's filtered ShareGPT, 30,731 requests)", _sharegpt),
}


def register(name: str, workload: Workload) -> None:
    """Add a named workload (`workload:NAME`)."""
    WORKLOADS[name] = workload


def load_requests(trace: str, store=None, rate_scale: float = 1.0, num_prompts: int = 1000,
                  rate: float = float("inf"), duration_s: float = 3600.0, seed: int = 0,
                  lengths_model: str | Path | None = None) -> list[Request]:
    """The requests of `trace` (see the module docstring); `store` is needed for store
    traces and `synth:`."""
    if not rate_scale > 0 or rate_scale == float("inf"):
        raise InvalidInputError(f"--rate-scale {rate_scale!r} must be a positive number")
    kind, _, name = trace.partition(":") if ":" in trace else ("", "", trace)
    if not rate > 0:
        raise InvalidInputError(f"--rate {rate!r} must be > 0 requests/s (inf: all at once)")
    if kind == "workload":
        df = _workload(name, num_prompts, rate, seed)
    elif kind == "synth":
        df = _synthesized(_need(store, trace), name, duration_s, seed)
    elif kind:
        raise InvalidInputError(f"trace {trace!r}: unknown prefix {kind!r}; use a store trace "
                                "name, synth:TRACE or workload:NAME")
    else:
        df = _stored(_need(store, trace), name)
    if kind != "workload" and rate != float("inf"):
        df = df.sort("arrival_s", maintain_order=True).with_columns(
            arrival_s=poisson_arrivals(df.height, rate, np.random.default_rng(seed)))
    df = df.with_columns(pl.col("arrival_s") / rate_scale)
    if lengths_model is not None:
        from servecast.estimator import Estimator

        pred = Estimator.load(lengths_model).output_length_batch(df)
        df = df.with_columns(p50=pred["p50"], p90=pred["p90"])
    return to_requests(df)


def to_requests(df: pl.DataFrame) -> list[Request]:
    """Requests of a frame with arrival_s, prompt_tokens, output_tokens (optional
    request_id, prefix_hashes, p50, p90)."""
    n = df.height
    cols = {c: df[c].to_list() if c in df.columns else [d] * n
            for c, d in (("prefix_hashes", None), ("p50", float("nan")),
                         ("p90", float("nan")))}
    ids = df["request_id"].to_list() if "request_id" in df.columns else list(range(n))
    return [Request(i, float(a), int(p), int(o), tuple(h or ()), float(p50), float(p90))
            for i, a, p, o, h, p50, p90 in zip(
                ids, df["arrival_s"].to_list(), df["prompt_tokens"].to_list(),
                df["output_tokens"].to_list(), cols["prefix_hashes"], cols["p50"],
                cols["p90"], strict=True)]


def _need(store, trace: str):
    if store is None:
        raise InvalidInputError(f"trace {trace!r} is read from the store: give --db STORE")
    return store


def _stored(store, name: str) -> pl.DataFrame:
    df = store.requests(name).pl()
    df = df.filter(~pl.col("failed") & (pl.col("output_tokens") > 0)
                   & (pl.col("prompt_tokens") > 0))
    if df.is_empty():
        raise InvalidInputError(f"trace {name!r} has no completed requests to simulate")
    if df["arrival_s"].null_count():
        raise InvalidInputError(f"trace {name!r}: {df['arrival_s'].null_count():,} requests "
                                "have no arrival time; simulate workload:NAME with --rate, or "
                                "a trace with arrivals")
    return df.with_columns(pl.col("arrival_s") - pl.col("arrival_s").min())


def _synthesized(store, name: str, duration_s: float, seed: int) -> pl.DataFrame:
    from servecast.analytics import synth

    if not duration_s > 0:
        raise InvalidInputError(f"--duration {duration_s!r} must be > 0 s")
    model = synth.fit_workload(store, name)
    df = synth.synthesize(model, duration_s, seed=seed,
                          with_prefixes=model.reuse_quantiles is not None)
    return df.filter(pl.col("output_tokens") > 0)


def _workload(name: str, n: int, rate: float, seed: int) -> pl.DataFrame:
    if name not in WORKLOADS:
        raise UnknownNameError(f"unknown workload {name!r}; known workloads: "
                               f"{', '.join(sorted(WORKLOADS))}")
    if n < 1:
        raise InvalidInputError(f"--num-prompts {n} must be >= 1")
    rng = np.random.default_rng(seed)
    prompt, output = WORKLOADS[name].lengths(data_dir(), n, rng)
    return pl.DataFrame({"arrival_s": poisson_arrivals(n, rate, rng),
                         "prompt_tokens": np.maximum(prompt, 1),
                         "output_tokens": np.maximum(output, 1)})


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """`n` Poisson arrival times (s) at `rate` requests/s, the first at 0 (inf: all at 0)."""
    if rate == float("inf"):
        return np.zeros(n)
    gaps = rng.exponential(1.0 / rate, n)
    return np.cumsum(gaps) - gaps[0]


# MLPerf's benchmark workloads register themselves (h-capacity)
from servecast.simulator import benchmark_workloads  # noqa: E402, F401
