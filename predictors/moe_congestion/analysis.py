"""Fit and compare routing models on one saved routing snapshot of a small-MoE run.

Batches of a snapshot are split once (seeded) into training and held-out batches. Models
compared on held-out L1 of expert load shares (in [0, 2]):
    uniform         1/E
    mean_loads      mean training load shares
    softmax         temperature softmax of quality (gamma = 0), single type
    congestion      logit equilibrium (beta, gamma), single type
    softmax_multi   gamma = 0, K k-means token types
    congestion_multi (beta, gamma) with K token types  -> gamma_eff
    congestion_cv   (optional) (beta, gamma) with K chosen by CV on the training batches
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.moe_congestion.batches import (
    Batches,
    QualityPrior,
    TokenTypes,
    to_batches,
)
from servecast.predictors.moe_congestion.fitting import l1, normalize_loads
from servecast.predictors.moe_congestion.game import CongestionGame
from servecast.predictors.moe_congestion.quality_stats import agreement, router_quality

QUALITIES = ("oracle", "taylor", "router")


def load_snapshot(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of one checkpoints/step_*.npz file."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def n_layers(snap: dict) -> int:
    return sum(1 for k in snap if k.startswith("choices_"))


def token_quality(snap: dict, layer: int, kind: str) -> np.ndarray:
    """Per-token quality (N, E) of `layer` by estimator `kind` (oracle, taylor, router)."""
    if kind not in QUALITIES:
        raise InvalidInputError(f"unknown quality {kind!r}; choose {', '.join(QUALITIES)}")
    if kind == "router":
        return router_quality(snap[f"logits_{layer}"].astype(float))
    return snap[f"{kind}_{layer}"].astype(float)


def split(n_batches: int, test_share: float = 1 / 3, seed: int = 0):
    """(train, test) batch indices, seeded."""
    perm = np.random.default_rng(seed).permutation(n_batches)
    n_test = max(1, int(round(n_batches * test_share)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def layer_batches(snap: dict, layer: int, quality: str = "oracle", n_types: int = 8,
                  seed: int = 0, shrink: bool = True) -> dict[str, tuple[Batches, Batches]]:
    """{'single': (train, test), 'multi': (train, test)} batches of one layer; token types by
    k-means on router log-probabilities of the training tokens only. `shrink`: batch type
    qualities shrunk toward the pooled type profile of the training tokens (`QualityPrior`;
    the held-out batches use the training prior, never their own loads)."""
    batch = snap["batch"]
    q = token_quality(snap, layer, quality)
    choices = snap[f"choices_{layer}"].astype(int)
    ids = np.unique(batch)
    tr, te = split(len(ids), seed=seed)
    in_train = np.isin(batch, ids[tr])
    feats = TokenTypes.features(snap[f"logits_{layer}"].astype(float))
    tt = TokenTypes(n_types, seed).fit(feats[in_train])
    labels = tt.predict(feats)
    K = tt.kmeans.n_clusters
    p1 = QualityPrior.fit(q[in_train], batch[in_train]) if shrink else None
    pk = QualityPrior.fit(q[in_train], batch[in_train], labels[in_train], K) if shrink else None
    single = to_batches(choices, q, batch, prior=p1)
    multi = to_batches(choices, q, batch, labels, K, prior=pk)
    return {"single": (single.subset(tr), single.subset(te)),
            "multi": (multi.subset(tr), multi.subset(te))}


def fit_game(train: Batches, fix_gamma=None, n_bootstrap: int = 0, seed: int = 0):
    """CongestionGame fitted on `train` batches."""
    return CongestionGame(fix_gamma=fix_gamma, n_bootstrap=n_bootstrap, seed=seed).fit(
        train.loads, train.quality, train.types)


def select_types(snap: dict, layer: int, quality: str = "oracle",
                 candidates: tuple[int, ...] = (1, 2, 4, 8), seed: int = 0, shrink: bool = True,
                 folds: int = 3) -> tuple[int, dict[int, float]]:
    """Number of token types K by cross-validation over the *training* batches only (held-out
    batches untouched): mean L1 of the congestion game fitted on the other folds. Returns
    (best K, {K: cv L1}); ties go to the smaller K."""
    scores = {}
    for k in candidates:
        data = layer_batches(snap, layer, quality, max(k, 1), seed, shrink)
        train = data["single" if k <= 1 else "multi"][0]
        B = train.loads.shape[0]
        fold_of = np.random.default_rng(seed + 1).permutation(B) % folds
        errs = []
        for f in range(folds):
            fit_idx, val_idx = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
            if len(fit_idx) < 2 or len(val_idx) < 1:
                continue
            sub, val = train.subset(fit_idx), train.subset(val_idx)
            game = fit_game(sub)
            errs.append(game.evaluate(val.loads, val.quality, val.types)["mean"])
        scores[k] = float(np.mean(errs)) if errs else float("inf")
    best = min(scores, key=lambda k: (round(scores[k], 12), k))
    return best, scores


def compare(snap: dict, layer: int, quality: str = "oracle", n_types: int = 8,
            n_bootstrap: int = 0, seed: int = 0, shrink: bool = True,
            cv_types: tuple[int, ...] | None = None) -> pl.DataFrame:
    """Held-out L1 of the six models (module docstring) at one layer, with beta, gamma and
    the bootstrap CI of gamma (n_bootstrap > 0); `shrink` as in `layer_batches`. With
    `cv_types` (candidate K, e.g. (1, 2, 4, 8)) a seventh row `congestion_cv`: the congestion
    game with K chosen by `select_types` on the training batches."""
    data = layer_batches(snap, layer, quality, n_types, seed, shrink)
    tr, te = data["single"]
    test_shares = normalize_loads(te.loads)
    E = test_shares.shape[1]
    rows = [
        {"model": "uniform", "types": 1, "heldout_l1": float(l1(np.full(E, 1 / E),
                                                                  test_shares).mean())},
        {"model": "mean_loads", "types": 1, "heldout_l1": float(
            l1(normalize_loads(tr.loads).mean(0), test_shares).mean())},
    ]
    for name, kind, fix in [("softmax", "single", 0.0), ("congestion", "single", None),
                            ("softmax_multi", "multi", 0.0), ("congestion_multi", "multi", None)]:
        train, test = data[kind]
        game = fit_game(train, fix, n_bootstrap if fix is None else 0, seed)
        p = game.params.row(0, named=True)
        rows.append({"model": name, "types": train.quality.shape[1], "beta": p["beta"],
                     "gamma": p["gamma"], "gamma_lo": p["gamma_lo"], "gamma_hi": p["gamma_hi"],
                     "train_l1": p["train_l1"],
                     "heldout_l1": game.evaluate(test.loads, test.quality, test.types)["mean"]})
    if cv_types:
        k, _ = select_types(snap, layer, quality, tuple(cv_types), seed, shrink)
        kd = layer_batches(snap, layer, quality, max(k, 1), seed, shrink)
        train, test = kd["single" if k <= 1 else "multi"]
        game = fit_game(train, None, 0, seed)
        p = game.params.row(0, named=True)
        rows.append({"model": "congestion_cv", "types": train.quality.shape[1],
                     "beta": p["beta"], "gamma": p["gamma"], "gamma_lo": None,
                     "gamma_hi": None, "train_l1": p["train_l1"],
                     "heldout_l1": game.evaluate(test.loads, test.quality, test.types)["mean"]})
    return pl.DataFrame(rows, schema_overrides={c: pl.Float64 for c in (
        "beta", "gamma", "gamma_lo", "gamma_hi", "train_l1")}).with_columns(
        layer=pl.lit(layer), quality=pl.lit(quality))


def quality_agreement(snap: dict) -> pl.DataFrame:
    """Agreement of the Taylor and router estimators with the oracle, per layer."""
    rows = []
    for layer in range(n_layers(snap)):
        oracle = token_quality(snap, layer, "oracle")
        for other in ("taylor", "router"):
            rows.append({"layer": layer, "estimator": other,
                         **agreement(oracle, token_quality(snap, layer, other))})
    return pl.DataFrame(rows)
