"""Training time of the metadata model on 1,000,000 synthetic BurstGPT-schema rows.

  .venv/bin/python benchmarks/output_length_train1m.py [--rows N]

Rows: Timestamp over 120 days, Model in {ChatGPT, GPT-4}, Log Type in {Conversation log,
API log}, request tokens log-normal, response tokens depending on all of them; 5% failed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from servecast.predictors.output_length import create
from servecast.predictors.output_length.settings import PRESET


def synthetic(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    model = rng.choice(["ChatGPT", "GPT-4"], n, p=[0.8, 0.2])
    log = rng.choice(["Conversation log", "API log"], n)
    t = np.sort(rng.uniform(0, 120 * 86400, n))
    prompt = np.maximum(1, rng.lognormal(6, 1.2, n)).astype(int)
    hour = (t / 3600) % 24
    base = np.where(model == "GPT-4", 320, 230) * np.where(log == "API log", 0.6, 1.0)
    out = np.maximum(1, base * (1 + 0.2 * np.sin(hour / 24 * 2 * np.pi))
                     * (prompt / 400) ** 0.15 * rng.lognormal(0, 0.6, n)).astype(int)
    failed = rng.random(n) < 0.05
    return pl.DataFrame({"arrival_s": t, "model": model, "log_type": log,
                         "prompt_tokens": prompt, "output_tokens": np.where(failed, 0, out),
                         "failed": failed})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    df = synthetic(args.rows)
    t0, c0 = time.perf_counter(), time.process_time()
    model = create("metadata", **PRESET.full.params("metadata")).fit(df)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    print(f"fit on {args.rows:,} rows: {fit_s:.1f} s wall, {cpu_s:.1f} s CPU (budget 120 s; "
          f"wall > CPU means the machine was shared); features {model.encoder.columns}")
    t0 = time.perf_counter()
    seg = create("segment").fit(df)
    print(f"segment-quantile baseline fit: {time.perf_counter() - t0:.1f} s "
          f"(ratio GBM/baseline {fit_s / (time.perf_counter() - t0):.1f}x)")
    test = synthetic(50_000, seed=1)
    print("GBM", {k: round(v, 3) for k, v in model.evaluate(test).items() if k != "segments"})
    print("segment", {k: round(v, 3) for k, v in seg.evaluate(test).items() if k != "segments"})


if __name__ == "__main__":
    main()
