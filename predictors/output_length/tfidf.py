"""TF-IDF + ridge on a prompt's words: the text model's lexical family and a baseline.

`TextRidge` reads the whole prompt (the sentence encoder reads its first MAX_SEQ_TOKENS
tokens): hashed word 1-2 grams (stateless: nothing but the IDF vector is fitted), sublinear
term frequency, IDF, L2-normalized, next to three numeric columns (log1p prompt tokens, the
previous turn's log1p output, whether there is one), ridge-regressed on log1p(output tokens).
The text model feeds its prediction to the GBM heads (out-of-fold on the training rows, by
conversation, so the heads learn how far to trust it); `TfidfRidge` is the same regressor as
a stand-alone output-length model, the baseline the text model must beat (issue 25).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FILE = "tfidf_ridge.npz"
N_FEATURES = 2**19  # hashed n-gram buckets
MAX_CHARS = 8000  # characters of a prompt read (its opening)
ALPHA = 1.0  # ridge penalty (on the L2-normalized TF-IDF rows)


def numeric(prompt_tokens: np.ndarray, prev_lout: np.ndarray) -> np.ndarray:
    """(n, 3) numeric columns: log1p prompt tokens, previous turn's log1p output (0 where
    none: NaN in), has a previous turn."""
    prev = np.asarray(prev_lout, np.float64)
    has = np.isfinite(prev)
    return np.column_stack([np.log1p(np.asarray(prompt_tokens, np.float64)),
                            np.where(has, prev, 0.0), has.astype(np.float64)])


def _hasher():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=N_FEATURES, ngram_range=(1, 2), alternate_sign=False,
                             norm=None, dtype=np.float32)


class TextRidge:
    """Fitted IDF, numeric scaling and ridge weights; `fit` then `predict` (log1p tokens)."""

    def __init__(self, idf: np.ndarray | None = None, scale: np.ndarray | None = None,
                 coef: np.ndarray | None = None, intercept: float = 0.0):
        self.idf, self.scale, self.coef, self.intercept = idf, scale, coef, intercept

    def _counts(self, texts: list[str]):
        X = _hasher().transform([t[:MAX_CHARS] for t in texts]).tocsr()
        X.data = 1.0 + np.log(X.data)  # sublinear tf
        return X

    def _tfidf(self, counts):
        from sklearn.preprocessing import normalize

        return normalize(counts.multiply(self.idf).tocsr()).astype(np.float32)

    def tfidf(self, texts: list[str]):
        """L2-normalized TF-IDF rows (sparse CSR, n x N_FEATURES) of prompts `texts` by the
        fitted IDF: what the ridge reads, and what the text model's lexical neighbours
        compare."""
        return self._tfidf(self._counts(texts))

    def _design(self, counts, num: np.ndarray):
        import scipy.sparse as sp

        return sp.hstack([self._tfidf(counts),
                          sp.csr_matrix((num - self.scale[0]) / self.scale[1])]).tocsr()

    def fit(self, texts: list[str], num: np.ndarray, ly: np.ndarray) -> TextRidge:
        """Fit on prompts `texts`, numeric columns `num` (see `numeric`), targets `ly`
        (log1p tokens)."""
        from sklearn.linear_model import Ridge

        C = self._counts(texts)
        df = np.bincount(C.indices, minlength=N_FEATURES)
        self.idf = (np.log((1.0 + C.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)
        self.scale = np.stack([num.mean(0), num.std(0) + 1e-9])
        reg = Ridge(alpha=ALPHA, solver="sparse_cg", tol=1e-4).fit(self._design(C, num), ly)
        self.coef, self.intercept = reg.coef_.astype(np.float32), float(reg.intercept_)
        return self

    def predict(self, texts: list[str], num: np.ndarray) -> np.ndarray:
        """Predicted log1p(output tokens), (n,)."""
        return np.asarray(self._design(self._counts(texts), num) @ self.coef) + self.intercept

    def save(self, path: Path) -> None:
        np.savez(Path(path) / FILE, idf=self.idf, scale=self.scale, coef=self.coef,
                 intercept=np.array(self.intercept), n_features=np.array(N_FEATURES))

    @classmethod
    def load(cls, path: Path) -> TextRidge:
        with np.load(Path(path) / FILE) as z:
            return cls(z["idf"], z["scale"], z["coef"], float(z["intercept"]))


def out_of_fold(texts: list[str], num: np.ndarray, ly: np.ndarray, groups: np.ndarray,
                folds: int = 5) -> np.ndarray:
    """Ridge predictions of each row by a `TextRidge` fitted on the other folds (rows of one
    group, a conversation, share a fold), (n,) log1p tokens."""
    from servecast.predictors.output_length.metrics import _unit

    fold = np.array([int(_unit(f"fold:{g}") * folds) for g in groups])
    out = np.zeros(len(ly))
    for k in range(folds):
        test = fold == k
        if test.any() and (~test).any():
            idx = np.flatnonzero(~test)
            model = TextRidge().fit([texts[i] for i in idx], num[idx], ly[idx])
            out[test] = model.predict([texts[i] for i in np.flatnonzero(test)], num[test])
    return out


def card(model: TextRidge) -> str:
    """A short JSON description for a model card."""
    return json.dumps({"n_features": N_FEATURES, "max_chars": MAX_CHARS, "alpha": ALPHA,
                       "nonzero_weights": int(np.count_nonzero(model.coef))})
