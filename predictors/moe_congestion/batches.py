"""From token-level routing records to the batch arrays the `CongestionGame` fits.

Token types (multi-type model): k-means on router log-probabilities (or hidden states) of
the training tokens; held-out tokens get the nearest centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servecast.errors import InvalidInputError


@dataclass
class Batches:
    """loads (B, E) token-assignment counts, quality (B, K, E), weights (B, K) type shares."""

    loads: np.ndarray
    quality: np.ndarray
    weights: np.ndarray

    def subset(self, idx: np.ndarray) -> Batches:
        return Batches(self.loads[idx], self.quality[idx], self.weights[idx])

    @property
    def types(self) -> np.ndarray | None:
        """Type shares for `CongestionGame.fit` (None for a single type)."""
        return None if self.weights.shape[1] == 1 else self.weights


def to_batches(choices: np.ndarray, quality: np.ndarray, batch: np.ndarray,
               types: np.ndarray | None = None, n_types: int | None = None,
               prior: QualityPrior | None = None) -> Batches:
    """Aggregate tokens into batches.

    choices (N, k) chosen experts; quality (N, E) per-token expert quality; batch (N,) batch
    id per token; types (N,) type label in [0, n_types) or None (one type). Type quality is
    the mean over the batch's tokens of that type (0 with weight 0 where absent); with a
    `prior` (`QualityPrior.fit` on training tokens) it is shrunk toward the pooled type
    profile: (sum_t q_t + n0 * profile_k) / (n_bk + n0).
    """
    choices = np.asarray(choices).reshape(len(batch), -1)
    N, E = quality.shape
    if len(choices) != N or len(batch) != N:
        raise InvalidInputError(f"choices {choices.shape}, quality {quality.shape} and batch "
                                f"{np.shape(batch)} must have the same number of tokens")
    # only differences between experts matter (softmax): drop each token's common level (its
    # loss, several nats) so that it cannot mask the expert differences in the shrinkage
    quality = quality - quality.mean(1, keepdims=True)
    ids, bi = np.unique(batch, return_inverse=True)
    B = len(ids)
    if types is None:
        types, K = np.zeros(N, dtype=int), 1
    else:
        K = int(n_types if n_types is not None else types.max() + 1)
    loads = np.zeros((B, E))
    np.add.at(loads, (np.repeat(bi, choices.shape[1]), choices.ravel()), 1.0)
    counts = np.zeros((B, K))
    np.add.at(counts, (bi, types), 1.0)
    qsum = np.zeros((B, K, E))
    np.add.at(qsum, (bi, types), quality)
    if prior is None:
        q = qsum / np.clip(counts[..., None], 1, None)
    else:
        if prior.profile.shape != (K, E):
            raise InvalidInputError(f"quality prior is {prior.profile.shape}, data ({K}, {E})")
        n0 = prior.n0
        q = (qsum + n0 * prior.profile[None]) / (counts[..., None] + n0)
    w = counts / counts.sum(1, keepdims=True)
    return Batches(loads, q, w)


@dataclass
class QualityPrior:
    """Pooled type-quality profile (K, E) and the shrinkage strength n0 (pseudo-tokens).

    A batch's type quality is a mean over few tokens (e.g. 24 tokens of a type in a 192-token
    batch) of per-token qualities whose spread across tokens (docs/results.md#moe-congestion)
    dwarfs the differences between experts; the raw mean is then mostly noise. The empirical-
    Bayes (James-Stein) estimate shrinks it toward the type's pooled profile with
    n0 = sigma^2_within / tau^2_between (method of moments on the training tokens): batches
    keep their own quality where it really varies between batches, and get the profile where
    the variation is sampling noise.
    """

    profile: np.ndarray
    n0: float

    @classmethod
    def fit(cls, quality: np.ndarray, batch: np.ndarray, types: np.ndarray | None = None,
            n_types: int | None = None, max_n0: float = 1e6) -> QualityPrior:
        """Moments from training tokens: quality (N, E), batch (N,), types (N,) or None."""
        N, E = quality.shape
        quality = quality - quality.mean(1, keepdims=True)  # as in `to_batches`
        types = np.zeros(N, dtype=int) if types is None else np.asarray(types, dtype=int)
        K = int(n_types if n_types is not None else types.max() + 1)
        _, bi = np.unique(batch, return_inverse=True)
        B = int(bi.max()) + 1
        counts = np.zeros((B, K))
        np.add.at(counts, (bi, types), 1.0)
        qsum = np.zeros((B, K, E))
        np.add.at(qsum, (bi, types), quality)
        tcount = counts.sum(0)
        profile = qsum.sum(0) / np.clip(tcount[:, None], 1, None)  # (K, E) pooled means
        m = qsum / np.clip(counts[..., None], 1, None)  # (B, K, E) batch-type means
        resid = quality - m[bi, types]
        dof = float((counts - 1).clip(0).sum())
        if dof <= 0:
            return cls(profile, 0.0)
        sigma2 = float((resid**2).sum() / (dof * E))  # within (b, k), per expert
        ok = counts >= 2
        if not ok.any():
            return cls(profile, max_n0)
        dev = ((m - profile[None]) ** 2).mean(-1)  # (B, K)
        tau2 = float((dev - sigma2 / np.clip(counts, 1, None))[ok].mean())
        n0 = max_n0 if tau2 <= sigma2 / max_n0 else sigma2 / tau2
        return cls(profile, float(n0))


class TokenTypes:
    """k-means token types on router log-probabilities (or any per-token features)."""

    def __init__(self, n_types: int = 8, seed: int = 0):
        self.n_types, self.seed = n_types, seed
        self.kmeans = None

    @staticmethod
    def features(logits: np.ndarray) -> np.ndarray:
        """Router logits (N, E) -> log-probabilities (softmax-invariant features)."""
        z = logits - logits.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    def fit(self, features: np.ndarray) -> TokenTypes:
        from sklearn.cluster import KMeans

        k = min(self.n_types, len(np.unique(features.round(6), axis=0)))
        self.kmeans = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(features)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Type label (N,) of each token."""
        return self.kmeans.predict(features)
