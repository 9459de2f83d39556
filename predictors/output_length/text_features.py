"""Extra inputs of the text model: the nearest training prompts and the request's wording.

- `NeighbourIndex`: for a prompt's unit MiniLM embedding, the K most similar training prompts
  (cosine) for K in KS: median, mean and 90th percentile of their log1p(output tokens), plus
  the top-1 and mean top-10 similarity. Training rows only see prompts of other conversations
  (leave-conversation-out), so the heads learn how far to trust neighbours they have not seen.
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
FILE = "neighbours.npz"
_AMOUNT = re.compile(
    r"(\d+)\s*(?:words?|sentences?|paragraphs?|lines|points|bullets?|items|examples|tweets|"
    r"questions|steps|ideas|names|titles)\b", re.IGNORECASE)
KEYWORDS = ("code", "write", "essay", "story", "list", "explain", "translate", "summar",
            "rewrite", "article", "blog", "email", "letter", "poem", "table", "json", "sql",
            "python", "function", "yes or no", "one word", "short", "brief", "detailed",
            "continue", "```", "?")
NAMES = ([f"nn{k}_{s}" for k in KS for s in ("median", "mean", "p90")] + ["nn_top1", "nn_top10"]
         + ["asked_amount", "lines", "chars"] + [f"kw_{i}" for i in range(len(KEYWORDS))])


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

    def __init__(self, E: np.ndarray, ly: np.ndarray):
        self.E = np.ascontiguousarray(E, dtype=np.float32)
        self.ly = np.asarray(ly, dtype=np.float64)

    def features(self, Q: np.ndarray, groups: np.ndarray | None = None,
                 chunk: int = 1000) -> np.ndarray:
        """(m, 3 * len(KS) + 2) neighbour features of query embeddings `Q`. With `groups`
        (the training rows' own group keys, Q = the training embeddings), each row skips
        the training prompts of its own group. NaN where no neighbour is left."""
        Q = np.asarray(Q, dtype=np.float32)
        n = len(self.E)
        out = np.full((len(Q), 3 * len(KS) + 2), np.nan)
        kmax = min(max(KS), n)
        if kmax == 0:
            return out
        for s in range(0, len(Q), chunk):
            S = Q[s:s + chunk] @ self.E.T
            if groups is not None:
                S[groups[s:s + chunk, None] == groups[None, :]] = -np.inf
            idx = np.argpartition(-S, kmax - 1, axis=1)[:, :kmax]
            sim = np.take_along_axis(S, idx, 1)
            order = np.argsort(-sim, axis=1)
            idx, sim = np.take_along_axis(idx, order, 1), np.take_along_axis(sim, order, 1)
            ly = np.where(np.isfinite(sim), self.ly[idx], np.nan)
            top = np.where(np.isfinite(sim), sim, np.nan)
            with warnings.catch_warnings():  # all-NaN rows (no neighbour left) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                cols = []
                for k in KS:
                    part = ly[:, :min(k, kmax)]
                    cols += [np.nanmedian(part, 1), np.nanmean(part, 1),
                             np.nanquantile(part, 0.9, axis=1)]
                cols += [top[:, 0], np.nanmean(top[:, :10], 1)]
            out[s:s + chunk] = np.column_stack(cols)
        return out

    def save(self, path: Path) -> None:
        np.savez(Path(path) / FILE, E=self.E, ly=self.ly)

    @classmethod
    def load(cls, path: Path) -> NeighbourIndex:
        with np.load(Path(path) / FILE) as z:
            return cls(z["E"], z["ly"])
