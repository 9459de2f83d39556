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
               types: np.ndarray | None = None, n_types: int | None = None) -> Batches:
    """Aggregate tokens into batches.

    choices (N, k) chosen experts; quality (N, E) per-token expert quality; batch (N,) batch
    id per token; types (N,) type label in [0, n_types) or None (one type). Type quality is
    the mean over the batch's tokens of that type (0 with weight 0 where absent).
    """
    choices = np.asarray(choices).reshape(len(batch), -1)
    N, E = quality.shape
    if len(choices) != N or len(batch) != N:
        raise InvalidInputError(f"choices {choices.shape}, quality {quality.shape} and batch "
                                f"{np.shape(batch)} must have the same number of tokens")
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
    q = qsum / np.clip(counts[..., None], 1, None)
    w = counts / counts.sum(1, keepdims=True)
    return Batches(loads, q, w)


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
