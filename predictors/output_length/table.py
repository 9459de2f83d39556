"""A fitted output-length model compiled to a lookup table (what the runtime serves).

Any model whose raw prediction is piecewise constant in `prompt_tokens` (split at `edges`)
given small integer codes (model, log_type, session context) is evaluated once on that grid:
`values[ctx, model, log_type, interval] = (p50, p90, p99, mean)` raw tokens. Importing this
module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

FILE = "table.npz"


class LengthTable:
    """values (C, M, L, P, 4) float32; P intervals (-inf, e0], (e0, e1], ..., (e_last, inf)."""

    def __init__(self, edges: np.ndarray, contexts: list[tuple[int, int, int]],
                 values: np.ndarray):
        self.edges = np.asarray(edges, dtype=np.float64)
        self.contexts = [tuple(int(v) for v in c) for c in contexts]
        self.ctx_index = {c: i for i, c in enumerate(self.contexts)}
        self.values = np.asarray(values, dtype=np.float32)

    @classmethod
    def build(cls, columns: list[str], n_models: int, n_logs: int, edges: np.ndarray,
              contexts: list[tuple[int, int, int]],
              raw: Callable[[np.ndarray], np.ndarray]) -> LengthTable:
        """Evaluate `raw(X) -> (n, 4)` on every grid point; X has `columns` (other codes 0)."""
        edges = np.unique(np.asarray(edges, dtype=np.float64))
        reps = np.concatenate([edges, [edges[-1] + 1.0 if len(edges) else 0.0]])
        C, M, L, P = len(contexts), n_models + 1, n_logs + 1, len(reps)
        grid = np.zeros((C, M, L, P, len(columns)))
        col = {c: j for j, c in enumerate(columns)}
        grid[..., col["prompt_tokens"]] = reps
        if "model" in col:
            grid[..., col["model"]] = np.arange(M)[None, :, None, None]
        if "log_type" in col:
            grid[..., col["log_type"]] = np.arange(L)[None, None, :, None]
        for name, k in (("turn_b", 0), ("prev_out_b", 1), ("growth_b", 2)):
            if name in col:
                grid[..., col[name]] = np.array([c[k] for c in contexts])[:, None, None, None]
        values = raw(grid.reshape(-1, len(columns))).reshape(C, M, L, P, 4)
        return cls(edges, contexts, values)

    def context_of(self, ctx: tuple[int, int, int]) -> int | None:
        """Row of a context code (None where the table was not built for it)."""
        return self.ctx_index.get(ctx)

    def lookup(self, ctx: np.ndarray, model: np.ndarray, log: np.ndarray,
               prompt: np.ndarray) -> np.ndarray:
        """Raw (n, 4) values for arrays of context rows, codes and prompt tokens."""
        p = np.searchsorted(self.edges, prompt, side="left")
        return self.values[ctx, model, log, p]

    def save(self, path: Path) -> None:
        np.savez_compressed(path / FILE, edges=self.edges,
                            contexts=np.array(self.contexts, dtype=np.int16).reshape(-1, 3),
                            values=self.values)

    @classmethod
    def load(cls, path: Path) -> LengthTable:
        with np.load(path / FILE) as z:
            return cls(z["edges"], [tuple(c) for c in z["contexts"]], z["values"])
