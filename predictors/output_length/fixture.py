"""A small output-length fitting problem for the conformance tests (registry `fixture`).

BurstGPT-schema requests whose output grows with the prompt and differs by model and log
type (lognormal noise), arrivals in time order, 1,500 train / 300 test rows."""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.predictors.registry import Fixture


def requests(n: int, seed: int) -> pl.DataFrame:
    """`n` synthetic BurstGPT-schema requests (tokens; arrivals in seconds, sorted)."""
    rng = np.random.default_rng(seed)
    model = rng.choice(["ChatGPT", "GPT-4"], n)
    log = rng.choice(["Conversation log", "API log"], n)
    prompt = rng.integers(1, 4000, n)
    base = np.where(model == "GPT-4", 300, 150) * np.where(log == "API log", 0.5, 1.0)
    out = np.maximum(1, base * (1 + prompt / 4000) * rng.lognormal(0, 0.3, n)).astype(int)
    return pl.DataFrame({"arrival_s": np.sort(rng.uniform(0, 3600, n)), "model": model,
                         "log_type": log, "prompt_tokens": prompt, "output_tokens": out,
                         "failed": np.zeros(n, bool)})


def fixture(seed: int = 0) -> Fixture:
    from servecast.predictors.output_length import create

    return Fixture(make=lambda: create("metadata", n_estimators=30, learning_rate=0.1),
                   train=requests(1500, seed), test=requests(300, seed + 1),
                   columns=("p50", "p90", "p99", "mean"))
