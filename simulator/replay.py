"""What-if replay of a request trace under each scheduling policy, with output-length
predictions from a saved model or one trained on the trace (the layer above predictors)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.estimator import Estimator
from servecast.frames import to_polars
from servecast.predictors.output_length import create
from servecast.predictors.output_length.core import completed
from servecast.predictors.output_length.metrics import split
from servecast.predictors.output_length.train import SETTINGS, load_requests
from servecast.simulator.engine import ServingConfig, capacity, scale_arrivals, simulate
from servecast.simulator.policies import POLICIES, policy_inputs


def whatif(frame, p50: np.ndarray, p90: np.ndarray, load: float = 0.9,
           policies: tuple[str, ...] = POLICIES, config: ServingConfig | None = None
           ) -> pl.DataFrame:
    """Replay `frame` (arrival_s, prompt_tokens, output_tokens) at `load` x the instance's
    saturation throughput under each policy, with predicted `p50`/`p90` (tokens, row-aligned).

    Returns one row per policy: mean/p50/p99 JCT and TTFT (s), throughput (req/s, tok/s),
    preemptions, plus the load and rates used.
    """
    cfg = config or ServingConfig()
    df = to_polars(frame, "requests frame")
    for c in ("arrival_s", "prompt_tokens", "output_tokens"):
        if c not in df.columns:
            raise InvalidInputError(f"what-if needs column {c!r} (have {', '.join(df.columns)})")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise InvalidInputError(f"unknown policy {sorted(unknown)}; known: {', '.join(POLICIES)}")
    if not 0 < load:
        raise InvalidInputError(f"load factor {load} must be > 0 (e.g. 0.9)")
    prompt = df["prompt_tokens"].to_numpy()
    out = df["output_tokens"].to_numpy()
    p50, p90 = np.asarray(p50, float), np.asarray(p90, float)
    if len(p50) != df.height or len(p90) != df.height:
        raise InvalidInputError("p50/p90 must have one value per request row")
    cap = capacity(prompt, out, cfg)
    arr = scale_arrivals(df["arrival_s"].to_numpy(), load * cap)
    rows = []
    for name in policies:
        r = simulate(arr, prompt, out, config=cfg,
                     **policy_inputs(name, p50, p90, out, arr, cfg))
        jct, ttft = r["jct_s"], r["ttft_s"]
        rows.append({
            "policy": name, "mean_jct_s": float(jct.mean()),
            "p50_jct_s": float(np.quantile(jct, 0.5)), "p99_jct_s": float(np.quantile(jct, 0.99)),
            "mean_ttft_s": float(ttft.mean()), "p99_ttft_s": float(np.quantile(ttft, 0.99)),
            "throughput_rps": df.height / r["makespan_s"],
            "tokens_per_s": float(out.sum()) / r["makespan_s"],
            "preemptions": int(r["preemptions"]), "load": load,
            "capacity_rps": cap, "arrival_rps": load * cap,
        })
    return pl.DataFrame(rows)


def sjf_gain(result: pl.DataFrame, policy: str = "sjf_pred") -> float:
    """Fraction of oracle SJF's mean-JCT reduction over FCFS that `policy` (default: SJF by
    predicted p50) achieves."""
    jct = dict(zip(result["policy"], result["mean_jct_s"], strict=True))
    gap = jct["fcfs"] - jct["sjf_oracle"]
    return float("nan") if gap <= 0 else (jct["fcfs"] - jct[policy]) / gap


def config_dict(config: ServingConfig) -> dict:
    """The config as a plain dict (for reports)."""
    return asdict(config)


def whatif_trace(store, trace: str, models=None, load: float = 0.9,
                 config: ServingConfig | None = None, max_rows: int | None = None,
                 fast: bool = True) -> pl.DataFrame:
    """`whatif` on the held-out (last 30%) requests of `trace`, with output-length
    predictions from the model dir `models` or, without one, a metadata model trained on
    the first 70% (fast settings)."""
    df = completed(load_requests(store, trace))
    train, test, _ = split(df)
    if max_rows:
        test = test[:max_rows]
    if models is not None:
        pred = Estimator.load(models).output_length_batch(test)
    else:
        pred = create("metadata", **SETTINGS["metadata"][fast]).fit(train).predict(test)
    return whatif(test, pred["p50"].to_numpy(), pred["p90"].to_numpy(), load=load,
                  config=config)
