"""Extra inputs of the text model: the nearest training prompts and the request's wording.

- `NeighbourIndex`: for a prompt's unit MiniLM embedding, the K most similar training prompts
  (cosine) for K in KS: median, mean and 90th percentile of their log1p(output tokens); the
  top-1 and mean top-10 similarity; the nearest prompt's output, the median of the nearest 3,
  median and 90th percentile of the nearest WIDE, a similarity-weighted mean of the nearest
  SOFT and the third similarity (NEIGHBOUR). Training rows only see prompts of other
  conversations (leave-conversation-out), so the heads learn how far to trust neighbours they
  have not seen. `LexicalIndex`: the same over the prompts' TF-IDF rows.
- `wording`: the amount asked for ("500 words", "3 paragraphs": log1p of the largest such
  number), line and character counts, and task keywords (code, write, list, translate, ...).

What both families add on ShareGPT: docs/results.md#output-length.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

KS = (10, 50)  # neighbourhood sizes
WIDE = 200  # the widest neighbourhood (its median and 90th percentile)
SOFT, SHARPNESS = 50, 20.0  # similarity-weighted mean: top SOFT, softmax(SHARPNESS x cosine)
FILE = "neighbours.npz"
LEXICAL_FILE = "lexical_neighbours.npz"
_AMOUNT = re.compile(
    r"(\d+)\s*(?:words?|sentences?|paragraphs?|lines|points|bullets?|items|examples|tweets|"
    r"questions|steps|ideas|names|titles)\b", re.IGNORECASE)
KEYWORDS = ("code", "write", "essay", "story", "list", "explain", "translate", "summar",
            "rewrite", "article", "blog", "email", "letter", "poem", "table", "json", "sql",
            "python", "function", "yes or no", "one word", "short", "brief", "detailed",
            "continue", "```", "?")
NEIGHBOUR = ([f"nn{k}_{s}" for k in KS for s in ("median", "mean", "p90")]
             + ["nn_top1", "nn_top10", "nn1_out", "nn3_median", f"nn{WIDE}_median",
                f"nn{WIDE}_p90", "nn_soft", "nn_top3"])
NAMES = (NEIGHBOUR + ["asked_amount", "lines", "chars"]
         + [f"kw_{i}" for i in range(len(KEYWORDS))])


def wording(texts: list[str]) -> np.ndarray:
    """(n, 3 + len(KEYWORDS)) wording features of prompt texts."""
    rows = []
    for s in texts:
        asked = max((int(a) for a in _AMOUNT.findall(s)), default=0)
        low = s.lower()
        rows.append([np.log1p(min(asked, 10_000)), s.count("\n"), len(s),
                     *(k in low for k in KEYWORDS)])
    return np.array(rows, dtype=np.float64).reshape(len(texts), 3 + len(KEYWORDS))


class NeighbourIndex:
    """Training prompts' unit embeddings `E` (n, d) and log1p outputs `ly` (n,)."""

    file = FILE

    def __init__(self, E: np.ndarray, ly: np.ndarray):
        self.E = np.ascontiguousarray(E, dtype=np.float32)
        self.ly = np.asarray(ly, dtype=np.float64)

    def features(self, Q: np.ndarray, groups: np.ndarray | None = None,
                 chunk: int = 1000) -> np.ndarray:
        """(m, len(NEIGHBOUR)) neighbour features of query rows `Q` (embeddings here; TF-IDF
        rows in `LexicalIndex`). With `groups` (the training rows' own group keys, Q = the
        training rows), each row skips the training prompts of its own group. NaN where no
        neighbour is left."""
        Q = self._queries(Q)
        n = self.E.shape[0]
        out = np.full((Q.shape[0], len(NEIGHBOUR)), np.nan)
        kmax = min(max(KS + (WIDE,)), n)
        if kmax == 0:
            return out
        for s in range(0, Q.shape[0], chunk):
            S = self._similarity(Q[s:s + chunk])
            if groups is not None:
                S[groups[s:s + chunk, None] == groups[None, :]] = -np.inf
            idx = np.argpartition(-S, kmax - 1, axis=1)[:, :kmax]
            sim = np.take_along_axis(S, idx, 1)
            order = np.argsort(-sim, axis=1)
            idx, sim = np.take_along_axis(idx, order, 1), np.take_along_axis(sim, order, 1)
            out[s:s + chunk] = _summaries(np.where(np.isfinite(sim), self.ly[idx], np.nan),
                                          np.where(np.isfinite(sim), sim, np.nan))
        return out

    @staticmethod
    def _queries(Q):
        return np.asarray(Q, dtype=np.float32)

    def _similarity(self, Q) -> np.ndarray:
        """Cosine similarities (m, n) of query rows `Q` to the training rows."""
        return Q @ self.E.T

    def save(self, path: Path) -> None:
        np.savez(Path(path) / self.file, E=self.E, ly=self.ly)

    @classmethod
    def load(cls, path: Path) -> NeighbourIndex:
        with np.load(Path(path) / cls.file) as z:
            return cls(z["E"], z["ly"])


class LexicalIndex(NeighbourIndex):
    """The same neighbour features over the training prompts' TF-IDF rows (`E`: sparse CSR,
    L2-normalized, tfidf.TextRidge.tfidf): near-duplicate wording anywhere in the prompt,
    where the embedding reads only its opening."""

    file = LEXICAL_FILE

    def __init__(self, E, ly: np.ndarray):
        import scipy.sparse as sp

        self.E = sp.csr_matrix(E, dtype=np.float32)
        self.ly = np.asarray(ly, dtype=np.float64)

    @staticmethod
    def _queries(Q):
        import scipy.sparse as sp

        return sp.csr_matrix(Q, dtype=np.float32)

    def _similarity(self, Q) -> np.ndarray:
        return (Q @ self.E.T).toarray()

    def save(self, path: Path) -> None:
        E = self.E
        np.savez_compressed(Path(path) / self.file, data=E.data, indices=E.indices,
                            indptr=E.indptr, shape=np.array(E.shape), ly=self.ly)

    @classmethod
    def load(cls, path: Path) -> LexicalIndex:
        import scipy.sparse as sp

        with np.load(Path(path) / cls.file) as z:
            E = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            return cls(E, z["ly"])


def _summaries(ly: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """NEIGHBOUR columns from the neighbours' log outputs `ly` and similarities `sim` (m, k),
    most similar first; NaN marks a missing neighbour."""
    with warnings.catch_warnings():  # all-NaN rows (no neighbour left) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        cols = []
        for k in KS:
            part = ly[:, :k]
            cols += [np.nanmedian(part, 1), np.nanmean(part, 1),
                     np.nanquantile(part, 0.9, axis=1)]
        cols += [sim[:, 0], np.nanmean(sim[:, :10], 1)]
        w = np.exp(SHARPNESS * (sim[:, :SOFT] - sim[:, :1]))
        w = np.where(np.isfinite(w), w, 0.0)
        cols += [ly[:, 0], np.nanmedian(ly[:, :3], 1), np.nanmedian(ly, 1),
                 np.nanquantile(ly, 0.9, axis=1),
                 np.nansum(w * ly[:, :SOFT], 1) / w.sum(1), sim[:, min(2, sim.shape[1] - 1)]]
    return np.column_stack(cols)
