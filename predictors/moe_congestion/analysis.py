"""Fit and compare routing models on one saved routing snapshot of a small-MoE run.

Batches of a snapshot are split once (seeded) into training and held-out batches. Models
compared on held-out L1 of expert load shares (in [0, 2]):
    uniform         1/E
    mean_loads      mean training load shares
    type_mix        no quality, no game: sum_k w_bk * (routing shares of type-k training
                    tokens), i.e. what the held-out type composition alone predicts
    softmax         temperature softmax of quality (gamma = 0), single type
    congestion      logit equilibrium (beta, gamma), single type
    softmax_multi   gamma = 0, K k-means token types
    congestion_multi (beta, gamma) with K token types  -> gamma_eff
    congestion_cv   (optional) (beta, gamma) with K chosen by CV on the training batches
    type_mix_cv     (optional) type_mix with the K of congestion_cv

Held-out batches are conversation-disjoint where the snapshot records conversations (`doc`):
batches that share a conversation are held out together (`heldout_split`).
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
#: quality estimator of `servecast moe fit` / `trajectory` and of the gamma_eff tables: the
#: oracle is the only one that measures the experts' usefulness independently of the router
#: (router quality makes the multi-type game nearly circular, see the README)
DEFAULT_QUALITY = "oracle"
#: shrink batch type qualities toward the pooled training profile (`QualityPrior`) by default?
#: oracle/taylor: yes, a token's forced-expert loss is a noisy measurement of what the router
#: never sees, and a batch's ~20 tokens of a type average little of that noise away. router:
#: no, the batch's mean router log-probability is an exact statistic of the tokens the router
#: actually routed, nothing to denoise (the benchmark reports both variants either way).
SHRINK_BY_DEFAULT = {"oracle": True, "taylor": True, "router": False}


def default_shrink(quality: str, shrink: bool | None = None) -> bool:
    """`shrink` if given, else the default of the quality estimator (`SHRINK_BY_DEFAULT`)."""
    return SHRINK_BY_DEFAULT.get(quality, True) if shrink is None else bool(shrink)


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


def split(n_batches: int, test_share: float = 1 / 3, seed: int = 0,
          groups: np.ndarray | None = None):
    """(train, test) batch indices, seeded. With `groups` (group id per batch) whole groups
    go to the test side until it holds >= test_share of the batches (group-disjoint split)."""
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(n_batches * test_share)))
    if groups is None:
        perm = rng.permutation(n_batches)
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    groups = np.asarray(groups)
    test: list[int] = []
    for g in rng.permutation(np.unique(groups)):
        if len(test) >= n_test:
            break
        test.extend(np.flatnonzero(groups == g).tolist())
    test_idx = np.sort(np.array(test, dtype=int))
    train_idx = np.setdiff1d(np.arange(n_batches), test_idx)
    if len(train_idx) == 0:
        raise InvalidInputError("one conversation group spans every batch; cannot hold "
                                "batches out by conversation")
    return train_idx, test_idx


def conversation_groups(snap: dict) -> np.ndarray | None:
    """Group id per batch (in sorted batch order): batches linked by a shared conversation
    (`doc`) fall into one group (connected components); None without a `doc` array."""
    if "doc" not in snap:
        return None
    _, bi = np.unique(snap["batch"], return_inverse=True)
    parent = np.arange(int(bi.max()) + 1)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict = {}
    for b, doc in zip(bi, np.asarray(snap["doc"]), strict=True):
        if doc in first:
            ra, rb = find(b), find(first[doc])
            if ra != rb:
                parent[ra] = rb
        else:
            first[doc] = b
    return np.array([find(b) for b in range(len(parent))])


def heldout_split(snap: dict, seed: int = 0):
    """(train, test) batch indices of a snapshot: conversation-disjoint (whole groups of
    batches that share a conversation are held out together) where the snapshot records
    conversations, else a plain random split of batches."""
    return split(len(np.unique(snap["batch"])), seed=seed, groups=conversation_groups(snap))


def token_types(snap: dict, layer: int, n_types: int = 8, seed: int = 0,
                fit: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(type label per token, K): k-means on the router log-probabilities of the tokens
    selected by `fit` (bool mask; None: all), every token given its nearest centroid."""
    feats = TokenTypes.features(snap[f"logits_{layer}"].astype(float))
    tt = TokenTypes(n_types, seed).fit(feats if fit is None else feats[fit])
    return tt.predict(feats), tt.kmeans.n_clusters


def typed_batches(snap: dict, layer: int, quality: str = DEFAULT_QUALITY, n_types: int = 8,
                  seed: int = 0, shrink: bool | None = None,
                  fit: np.ndarray | None = None) -> dict:
    """{'single', 'multi': Batches of all the snapshot's batches at one layer (one / K token
    types), 'labels', 'K'}: token types (`token_types`) and, with `shrink` (None:
    `default_shrink(quality)`), the quality priors (`QualityPrior`) fitted on the tokens
    selected by `fit` (bool mask; None: all)."""
    shrink = default_shrink(quality, shrink)
    batch = snap["batch"]
    q = token_quality(snap, layer, quality)
    choices = snap[f"choices_{layer}"].astype(int)
    labels, K = token_types(snap, layer, n_types, seed, fit)
    f = slice(None) if fit is None else fit
    p1 = QualityPrior.fit(q[f], batch[f]) if shrink else None
    pk = QualityPrior.fit(q[f], batch[f], labels[f], K) if shrink else None
    return {"single": to_batches(choices, q, batch, prior=p1),
            "multi": to_batches(choices, q, batch, labels, K, prior=pk),
            "labels": labels, "K": K}


def layer_batches(snap: dict, layer: int, quality: str = DEFAULT_QUALITY, n_types: int = 8,
                  seed: int = 0, shrink: bool | None = None) -> dict:
    """{'single': (train, test), 'multi': (train, test), 'type_routing': (K, E)} for one
    layer of the held-out split (`heldout_split`); token types and quality priors fitted on
    the training tokens only (`typed_batches`: held-out tokens get the nearest centroid and
    the training prior, never their own loads).
    type_routing: share of each type's training tokens routed to each expert (`type_mix`)."""
    batch = snap["batch"]
    tr, te = heldout_split(snap, seed)
    in_train = np.isin(batch, np.unique(batch)[tr])
    data = typed_batches(snap, layer, quality, n_types, seed, shrink, fit=in_train)
    single, multi, labels, K = data["single"], data["multi"], data["labels"], data["K"]
    choices = snap[f"choices_{layer}"].astype(int)
    routing = np.zeros((K, multi.loads.shape[1]))
    lab_tr, ch_tr = labels[in_train], choices[in_train]
    np.add.at(routing, (np.repeat(lab_tr, ch_tr.shape[1]), ch_tr.ravel()), 1.0)
    routing /= np.clip(routing.sum(1, keepdims=True), 1, None)
    return {"single": (single.subset(tr), single.subset(te)),
            "multi": (multi.subset(tr), multi.subset(te)), "type_routing": routing}


def fit_game(train: Batches, fix_gamma=None, n_bootstrap: int = 0, seed: int = 0):
    """CongestionGame fitted on `train` batches."""
    return CongestionGame(fix_gamma=fix_gamma, n_bootstrap=n_bootstrap, seed=seed).fit_arrays(
        train.loads, train.quality, train.types)


def select_types(snap: dict, layer: int, quality: str = DEFAULT_QUALITY,
                 candidates: tuple[int, ...] = (1, 2, 4, 8), seed: int = 0,
                 shrink: bool | None = None,
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
            errs.append(game.evaluate_arrays(val.loads, val.quality, val.types)["mean"])
        scores[k] = float(np.mean(errs)) if errs else float("inf")
    best = min(scores, key=lambda k: (round(scores[k], 12), k))
    return best, scores


def compare(snap: dict, layer: int, quality: str = DEFAULT_QUALITY, n_types: int = 8,
            n_bootstrap: int = 0, seed: int = 0, shrink: bool | None = None,
            cv_types: tuple[int, ...] | None = None) -> pl.DataFrame:
    """Held-out L1 of the six models (module docstring) at one layer, with beta, gamma and
    the bootstrap CI of gamma (n_bootstrap > 0); `shrink` as in `layer_batches`. With
    `cv_types` (candidate K, e.g. (1, 2, 4, 8)) the rows `congestion_cv` (the congestion game
    with K chosen by `select_types` on the training batches) and `type_mix_cv` (type_mix with
    that K: what the types alone give)."""
    shrink = default_shrink(quality, shrink)
    data = layer_batches(snap, layer, quality, n_types, seed, shrink)
    tr, te = data["single"]
    test_shares = normalize_loads(te.loads)
    E = test_shares.shape[1]
    rows = [
        {"model": "uniform", "types": 1, "heldout_l1": float(l1(np.full(E, 1 / E),
                                                                  test_shares).mean())},
        {"model": "mean_loads", "types": 1, "heldout_l1": float(
            l1(normalize_loads(tr.loads).mean(0), test_shares).mean())},
        {"model": "type_mix", "types": data["type_routing"].shape[0],
         "heldout_l1": _type_mix_l1(data, test_shares)},
    ]
    for name, kind, fix in [("softmax", "single", 0.0), ("congestion", "single", None),
                            ("softmax_multi", "multi", 0.0), ("congestion_multi", "multi", None)]:
        train, test = data[kind]
        game = fit_game(train, fix, n_bootstrap if fix is None else 0, seed)
        p = game.params.row(0, named=True)
        rows.append({"model": name, "types": train.quality.shape[1], "beta": p["beta"],
                     "gamma": p["gamma"], "gamma_lo": p["gamma_lo"], "gamma_hi": p["gamma_hi"],
                     "train_l1": p["train_l1"],
                     "heldout_l1": game.evaluate_arrays(test.loads, test.quality,
                                                        test.types)["mean"]})
    if cv_types:
        k, _ = select_types(snap, layer, quality, tuple(cv_types), seed, shrink)
        kd = layer_batches(snap, layer, quality, max(k, 1), seed, shrink)
        train, test = kd["single" if k <= 1 else "multi"]
        game = fit_game(train, None, 0, seed)
        p = game.params.row(0, named=True)
        rows.append({"model": "congestion_cv", "types": train.quality.shape[1],
                     "beta": p["beta"], "gamma": p["gamma"], "gamma_lo": None,
                     "gamma_hi": None, "train_l1": p["train_l1"],
                     "heldout_l1": game.evaluate_arrays(test.loads, test.quality,
                                                        test.types)["mean"]})
        rows.append({"model": "type_mix_cv", "types": kd["type_routing"].shape[0],
                     "heldout_l1": _type_mix_l1(kd, test_shares)})
    return pl.DataFrame(rows, schema_overrides={c: pl.Float64 for c in (
        "beta", "gamma", "gamma_lo", "gamma_hi", "train_l1")}).with_columns(
        layer=pl.lit(layer), quality=pl.lit(quality), shrink=pl.lit(shrink))


def _type_mix_l1(data: dict, test_shares: np.ndarray) -> float:
    """Held-out L1 of `type_mix`: each held-out batch's type shares times the training
    routing shares of the types (`layer_batches` output `data`)."""
    return float(l1(data["multi"][1].weights @ data["type_routing"], test_shares).mean())


def gamma_all_batches(snap: dict, layer: int, quality: str = DEFAULT_QUALITY,
                      n_types: int = 8, n_bootstrap: int = 20, seed: int = 0,
                      shrink: bool | None = None) -> pl.DataFrame:
    """gamma_eff characterization on ALL batches of a snapshot (no held-out split: this
    measures the routing, it predicts nothing). Token types, the quality prior and (beta,
    gamma) are fitted on every batch; CIs from `n_bootstrap` batch-bootstrap refits.
    Rows `congestion` (single type) and `congestion_multi` (K = n_types) with beta (CI
    beta_lo/beta_hi), gamma (CI gamma_lo/gamma_hi, bootstrap s.e. gamma_se), gamma_over_beta
    (congestion price in quality units per unit load share), train_l1, batches."""
    shrink = default_shrink(quality, shrink)
    typed = typed_batches(snap, layer, quality, n_types, seed, shrink)
    rows = []
    for name, data in (("congestion", typed["single"]), ("congestion_multi", typed["multi"])):
        game = fit_game(data, None, n_bootstrap, seed)
        p = game.params.row(0, named=True)
        rows.append({"model": name, "types": data.quality.shape[1],
                     "batches": data.loads.shape[0], "beta": p["beta"], "gamma": p["gamma"],
                     "gamma_lo": p.get("gamma_lo"), "gamma_hi": p.get("gamma_hi"),
                     "gamma_se": game.intervals.get(0, {}).get("gamma_se"),
                     "beta_lo": p["beta_lo"], "beta_hi": p["beta_hi"],
                     "gamma_over_beta": p["gamma"] / p["beta"] if p["beta"] else None,
                     "train_l1": p["train_l1"]})
    return pl.DataFrame(rows, schema_overrides={c: pl.Float64 for c in (
        "beta", "gamma", "gamma_lo", "gamma_hi", "gamma_se", "beta_lo", "beta_hi",
        "gamma_over_beta", "train_l1")}).with_columns(layer=pl.lit(layer), quality=pl.lit(quality),
                                    shrink=pl.lit(shrink))


def protocol_stats(snap: dict, layer: int = 0, n_types: int = 8, seed: int = 0) -> dict:
    """How the held-out batches are formed and how much their composition varies.

    conversations_per_batch: mean distinct conversations per batch; heldout_sharing: share of
    held-out batches that share a conversation with some training batch; type_share_var and
    load_var: between-batch variance of the type shares (K-means types of `layer`) and of the
    expert load shares, divided by the multinomial variance p(1-p)/n expected if every batch
    drew its tokens from one common mixture (1 = no real composition differences), averaged
    over types / experts; noise_floor_l1: the mean L1 that a perfect predictor of expected
    loads would still incur from multinomial sampling of each batch's tokens (simulated from
    the pooled shares)."""
    batch = snap["batch"]
    ids, bi = np.unique(batch, return_inverse=True)
    tr, te = heldout_split(snap, seed)
    docs = snap.get("doc")
    out = {"batches": len(ids), "heldout_batches": len(te),
           "tokens_per_batch": float(len(batch) / len(ids))}
    if docs is not None:
        per = [set(np.unique(docs[bi == i])) for i in range(len(ids))]
        train_docs = set().union(*(per[i] for i in tr))
        out["conversations_per_batch"] = float(np.mean([len(p) for p in per]))
        out["heldout_sharing"] = float(np.mean([bool(per[i] & train_docs) for i in te]))
    labels, _ = token_types(snap, layer, n_types, seed, fit=np.isin(batch, ids[tr]))
    choices = snap[f"choices_{layer}"].astype(int)[:, 0]
    n = np.bincount(bi).astype(float)

    def var_ratio(lab, k):
        share = np.zeros((len(ids), k))
        np.add.at(share, (bi, lab), 1.0)
        share /= n[:, None]
        p = share.mean(0)
        ok = p > 0
        expected = (p * (1 - p))[None] / n[:, None]
        return float((share.var(0)[ok] / expected.mean(0)[ok]).mean()), p

    out["type_share_var"], _ = var_ratio(labels, int(labels.max()) + 1)
    E = snap[f"logits_{layer}"].shape[1]
    out["load_var"], p = var_ratio(choices, E)
    rng = np.random.default_rng(seed)
    sims = [np.abs(rng.multinomial(int(m), p) / m - p).sum() for m in n for _ in range(20)]
    out["noise_floor_l1"] = float(np.mean(sims))
    return out


def quality_agreement(snap: dict) -> pl.DataFrame:
    """Agreement of the Taylor and router estimators with the oracle, per layer."""
    rows = []
    for layer in range(n_layers(snap)):
        oracle = token_quality(snap, layer, "oracle")
        for other in ("taylor", "router"):
            rows.append({"layer": layer, "estimator": other,
                         **agreement(oracle, token_quality(snap, layer, other))})
    return pl.DataFrame(rows)
