"""Conversation memory of the text model: what the earlier turns of a request's conversation
say about its output length.

Conversations repeat their kind of request ("summarize chapter 3" after "summarize chapter
2", "continue", "shorter"), so the outputs of earlier turns, weighted by how similar their
prompts are to this one, tell more than the prompt alone. Per request, from the earlier turns
of its session whose output is known (outputs as log1p tokens; similarity = cosine of the unit
prompt embeddings):

  conv_prev_lout, conv_prev_sim   the previous turn's output and its similarity
  conv_mean_lout                  mean output of the earlier turns
  conv_best_lout, conv_best_sim   output of the most similar earlier turn, that similarity
  conv_wmean_lout                 softmax(SHARPNESS x similarity)-weighted mean output

NaN where the request has no session or its session no earlier turn with a known output.
What the memory adds on ShareGPT: docs/results.md#output-length. Requests without a session
score as without the memory.
"""

from __future__ import annotations

import numpy as np
import polars as pl

MEMORY = ["conv_prev_lout", "conv_prev_sim", "conv_mean_lout", "conv_best_lout",
          "conv_best_sim", "conv_wmean_lout"]
SHARPNESS = 10.0  # 1 / temperature of the similarity weights (cosine units)


class ConversationMemory:
    """Earlier turns per session: unit prompt embeddings (None where unknown) and log1p
    outputs. `features` then `add`, turn by turn, gives the batch and the runtime the same
    numbers."""

    def __init__(self, turns=None):
        # session -> (embeddings, log outputs); a runtime passes a bounded `RecentSessions`
        self.turns = {} if turns is None else turns

    def features(self, session_id, e: np.ndarray | None) -> np.ndarray:
        """(len(MEMORY),) features of a request with unit embedding `e` in `session_id`."""
        out = np.full(len(MEMORY), np.nan)
        embs, louts = self.turns.get(session_id, ((), ()))
        if session_id is None or not louts:
            return out
        y = np.asarray(louts)
        out[0], out[2] = y[-1], y.mean()
        seen = [i for i, v in enumerate(embs) if v is not None]
        if e is None or not seen:
            return out
        sims = np.stack([embs[i] for i in seen]) @ np.asarray(e, np.float64)
        if embs[-1] is not None:
            out[1] = sims[-1]
        best = int(sims.argmax())
        w = np.exp(SHARPNESS * (sims - sims[best]))
        out[3], out[4] = y[seen[best]], sims[best]
        out[5] = float(w @ y[seen] / w.sum())
        return out

    def add(self, session_id, e: np.ndarray | None, output_tokens: float) -> None:
        """Record a finished turn (output in tokens) of `session_id` (None: ignored)."""
        if session_id is None:
            return
        embs, louts = self.turns.setdefault(session_id, ([], []))
        embs.append(None if e is None else np.asarray(e, np.float64))
        louts.append(float(np.log1p(output_tokens)))


def memory_features(df: pl.DataFrame, E: np.ndarray) -> np.ndarray:
    """(n, len(MEMORY)) features of the rows of `df` (unit embeddings `E`, aligned): each row
    sees the earlier turns of its session in the frame (by `turn`, then row order) whose
    `output_tokens` is known; never its own output."""
    n = df.height
    out = np.full((n, len(MEMORY)), np.nan)
    if "session_id" not in df.columns:
        return out
    sids = df["session_id"].cast(pl.Utf8).to_list()
    turn = (df["turn"].cast(pl.Float64).fill_null(np.inf).to_numpy() if "turn" in df.columns
            else np.zeros(n))
    y = (df["output_tokens"].cast(pl.Float64).fill_null(np.nan).to_numpy()
         if "output_tokens" in df.columns else np.full(n, np.nan))
    memory = ConversationMemory()
    for i in sorted(range(n), key=lambda i: (sids[i] or "", turn[i], i)):
        if sids[i] is None:
            continue
        out[i] = memory.features(sids[i], E[i])
        if np.isfinite(y[i]):
            memory.add(sids[i], E[i], y[i])
    return out
