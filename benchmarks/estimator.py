"""Estimator hot-path speed, printed next to the underlying library's own predict.

  .venv/bin/python benchmarks/estimator.py [--models DIR] [--text-models DIR]

Metadata model: single `output_length` call (p50/p99 µs) vs LightGBM `Booster.predict` on one
row (all four heads); 100,000-row `output_length_batch` vs LightGBM on the same rows. Text
model (if a dir is given): single call (ms) vs SentenceTransformer.encode alone.
Without --models a metadata model is trained on azure_conv (fast settings) first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def timings(fn, n: int) -> np.ndarray:
    """Per-call seconds of `n` calls (after 50 warm-up calls)."""
    for _ in range(50):
        fn()
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out


def metadata(models: Path, calls: int) -> None:
    import lightgbm as lgb
    import polars as pl

    from servecast.estimator import Estimator

    est = Estimator.load(models)
    rt = est.runtime("output_length")
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, 8000, calls).tolist()
    it = iter(prompts * 2)
    ours = timings(lambda: est.output_length(next(it)), calls)
    boosters = [lgb.Booster(model_file=str(p)) for p in sorted(rt.path.glob("head*.txt"))]
    x = np.zeros((1, len(rt.columns)))
    x[0, 0] = 1000
    lib = timings(lambda: [b.predict(x, num_threads=1) for b in boosters], max(calls // 10, 200))
    print(f"single call (Estimator.output_length): p50 {np.median(ours) * 1e6:.1f} µs, "
          f"p99 {np.quantile(ours, 0.99) * 1e6:.1f} µs")
    print(f"  LightGBM Booster.predict, 1 row x {len(boosters)} heads: "
          f"p50 {np.median(lib) * 1e6:.1f} µs, p99 {np.quantile(lib, 0.99) * 1e6:.1f} µs")
    print(f"  ratio (library / ours, p50): {np.median(lib) / np.median(ours):.0f}x")
    frame = pl.DataFrame({"prompt_tokens": rng.integers(1, 8000, 100_000)})
    est.output_length_batch(frame[:1000])
    t = time.perf_counter()
    est.output_length_batch(frame)
    ours_b = time.perf_counter() - t
    X = np.zeros((100_000, len(rt.columns)))
    X[:, 0] = frame["prompt_tokens"].to_numpy()
    t = time.perf_counter()
    for b in boosters:
        b.predict(X, num_threads=1)
    lib_b = time.perf_counter() - t
    print(f"100,000-row batch: {ours_b:.3f} s (LightGBM predict on the same rows: {lib_b:.3f} s, "
          f"ratio {lib_b / ours_b:.1f}x)")


def text(models: Path, calls: int) -> None:
    from servecast.estimator import Estimator
    from servecast.predictors.output_length.embeddings import encoder

    est = Estimator.load(models)
    prompts = ["How do I reverse a linked list in Python? Please explain step by step.",
               "Write a short poem about the sea.",
               "Summarize the following text: " + "lorem ipsum dolor sit amet " * 30]
    it = iter(prompts * calls)
    ours = timings(lambda: est.output_length(30, prompt_text=next(it)), calls)
    enc = encoder()
    it2 = iter(prompts * calls)
    lib = timings(lambda: enc.encode([next(it2)], normalize_embeddings=True), calls)
    print(f"text single call: p50 {np.median(ours) * 1e3:.2f} ms, "
          f"p99 {np.quantile(ours, 0.99) * 1e3:.2f} ms; SentenceTransformer.encode alone "
          f"p50 {np.median(lib) * 1e3:.2f} ms "
          f"(overhead ratio {np.median(ours) / np.median(lib):.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path)
    ap.add_argument("--text-models", type=Path)
    ap.add_argument("--calls", type=int, default=20_000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    models = args.models
    if models is None:
        from _stores import llm_store

        from servecast.predictors.output_length.train import train_output_length

        models = Path(tempfile.mkdtemp()) / "output_length"
        train_output_length(llm_store(("azure_conv",)), "azure_conv", models, fast=True)
    metadata(models, args.calls)
    if args.text_models:
        text(args.text_models, min(args.calls, 300))


if __name__ == "__main__":
    main()
