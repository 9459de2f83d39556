"""Evaluation protocol of output-length models: splits and the per-frame scores (tokens),
computed with the shared `predictors.metrics`."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from servecast.predictors import metrics

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def split(df: pl.DataFrame, train_frac: float = 0.7, seed: int = 0
          ) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """Time-ordered split (first `train_frac` of arrivals / last rest) when `arrival_s`
    exists, else a seeded split by conversation (`session_id`, else by row).

    Returns (train, test, description).
    """
    if "arrival_s" in df.columns and df["arrival_s"].null_count() < df.height:
        d = df.with_row_index("_i").sort(["arrival_s", "_i"], nulls_last=True).drop("_i")
        cut = int(round(d.height * train_frac))
        return d[:cut], d[cut:], f"time-ordered: first {train_frac:.0%} / last {1 - train_frac:.0%}"
    key = (df["session_id"].cast(pl.Utf8) if "session_id" in df.columns
           and df["session_id"].null_count() < df.height else None)
    keys = key.fill_null("").to_list() if key is not None else [str(i) for i in range(df.height)]
    u = np.array([_unit(f"{seed}:{k}") for k in keys])
    mask = pl.Series(u < train_frac)
    by = "conversation" if key is not None else "row"
    how = f"seeded (seed {seed}) split by {by}: {train_frac:.0%}"
    return df.filter(mask), df.filter(~mask), how


def _unit(s: str) -> float:
    """Deterministic hash of `s` in [0, 1)."""
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big") / 2**64


def scores(y: np.ndarray, pred: pl.DataFrame) -> dict[str, float]:
    """MAE of p50, Kendall tau of p50, coverage of p50/p90/p99, pinball losses, MAE of mean."""
    y = np.asarray(y, dtype=np.float64)
    p50 = pred["p50"].to_numpy()
    out = {"n": int(len(y)), "mae_p50": metrics.mae(p50, y),
           "kendall_tau": metrics.kendall_tau(p50, y),
           "mae_mean": metrics.mae(pred["mean"].to_numpy(), y)}
    for name, a in QUANTILES.items():
        q = pred[name].to_numpy()
        out[f"coverage_{name}"] = metrics.coverage(q, y)
        out[f"pinball_{name}"] = metrics.pinball(q, y, a)
    return out


def segment_scores(test: pl.DataFrame, pred: pl.DataFrame) -> list[dict]:
    """`scores` per (model, log_type) segment where the frame has those columns."""
    cols = [c for c in ("model", "log_type") if c in test.columns
            and test[c].null_count() < test.height]
    if not cols:
        return []
    joined = pl.concat([test.select([*cols, "output_tokens"]), pred], how="horizontal")
    rows = []
    for key, part in joined.group_by(cols, maintain_order=True):
        rows.append({**dict(zip(cols, key, strict=True)),
                     **scores(part["output_tokens"].to_numpy(), part)})
    return rows
