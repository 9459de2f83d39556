"""Workloads out: a stored (or synthesized) trace written as the replay tools read it.

Formats (`FORMATS`):
- `mooncake`: JSONL, one request per line: `timestamp` (integer ms since the first
  arrival), `input_length`, `output_length`, `hash_ids` (ids of 512-token prompt blocks,
  len = ceil(input_length / 512)) and `session_id` where the trace has sessions. The trace's
  own block ids where it has them (Mooncake), else new ids per request (no invented prefix
  sharing). A failed request (0 output tokens) gets `output_length` 1: replay tools refuse a
  request for 0 tokens (AIPerf: max_tokens >= 1). Read by AIPerf (`--custom-dataset-type
  mooncake_trace`), GuideLLM (`kind: mooncake`; it reads timestamps in seconds:
  `time_scale: 0.001`) and vLLM bench. A trace
  without arrival times (ShareGPT) is written without `timestamp` (AIPerf's multi-turn form).
- `vllm-custom`: vLLM bench's custom dataset (`vllm bench serve --dataset-name custom
  --custom-output-len -1`): JSONL `{"prompt", "output_tokens"}`. The prompt is the
  request's text where the trace has it, else a text of exactly `input_length` cl100k_base
  tokens built from its hash ids (a block id always gives the same 512 tokens, so prefix
  reuse survives). vLLM draws arrival times itself (`--request-rate`, `--burstiness`).
- `burstgpt`: BurstGPT CSV, v1 columns, v3 (Session ID, Elapsed time) when the trace has
  sessions; Model / Log Type are left empty where the trace has none.
- `servegen`: ServeGen-style per-window parameters (CSV, or JSON for a `.json` path): window,
  start_s, duration_s (s), requests, rate (req/s), cv, dist (gamma or Weibull, the better by
  KS), shape and scale (scipy conventions, s), quantized (the trace's timestamps are, see
  `arrivals.timestamp_quantization`). `servecast synth --windows FILE` reads it back.

Every file is written to `<path>.part` and renamed when complete: nothing half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from servecast.analytics.source import source
from servecast.errors import InvalidInputError

FORMATS = ("mooncake", "vllm-custom", "burstgpt", "servegen")
REQUEST_FORMATS = FORMATS[:3]  # the ones written from rows (synth's formats)
BLOCK_TOKENS = 512  # Mooncake prefix block size (tokens)
COLUMNS = ("arrival_s", "session_id", "turn", "model", "log_type", "prompt_tokens",
           "output_tokens", "elapsed_s", "prefix_hashes", "prompt_text")


def trace_requests(src, trace: str | None = None) -> pl.DataFrame:
    """The trace's requests in replay order (arrival, then session and turn): the columns
    of `COLUMNS` the trace has, arrival_s in s since its first arrival."""
    s = source(src, trace, "llm_requests")
    have = [c for c in COLUMNS if c in s.columns()]
    sel = ", ".join("arrival_s - min(arrival_s) OVER () AS arrival_s" if c == "arrival_s"
                    else c for c in have)
    order = [c for c in ("arrival_s", "session_id", "turn") if c in have]
    return s.sql(f"SELECT {sel} FROM t ORDER BY {', '.join(order)}, request_id NULLS LAST")


def mooncake_records(df: pl.DataFrame) -> pl.DataFrame:
    """The Mooncake columns of a request frame (see module docstring); columns with no value
    at all (timestamps of a trace without arrivals, session ids of one without sessions)
    are left out."""
    inp = df["prompt_tokens"].cast(pl.Int64)
    if inp.null_count() or (inp < 0).any():
        raise InvalidInputError("prompt_tokens must be known and >= 0 for Mooncake output")
    nblocks = (-(-inp // BLOCK_TOKENS)).to_numpy()
    own = df["prefix_hashes"] if "prefix_hashes" in df.columns else None
    ids: list[list[int]] = []
    next_id = _max_id(own) + 1
    for i, nb in enumerate(nblocks.tolist()):
        h = own[i] if own is not None else None
        if h is not None and len(h) == nb:
            ids.append(h.to_list())
        else:  # no block ids (or not 512-token ones): new blocks, no shared prefix
            ids.append(list(range(next_id, next_id + nb)))
            next_id += nb
    out = {}
    if "arrival_s" in df.columns and df["arrival_s"].null_count() < df.height:
        out["timestamp"] = (df["arrival_s"] * 1000).round(0).cast(pl.Int64)
    out |= {"input_length": inp,
            "output_length": df["output_tokens"].cast(pl.Int64).clip(lower_bound=1),
            "hash_ids": pl.Series(ids, dtype=pl.List(pl.Int64))}
    if "session_id" in df.columns and df["session_id"].null_count() < df.height:
        out["session_id"] = df["session_id"].cast(pl.Utf8)
    return pl.DataFrame(out)


def _max_id(hashes: pl.Series | None) -> int:
    if hashes is None or hashes.null_count() == len(hashes):
        return -1
    m = hashes.list.max().max()
    return -1 if m is None else int(m)


@lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    """Space-led lowercase words that are one cl100k_base token each (a text of n of them
    is n tokens: the tokenizer never merges across the leading space)."""
    from servecast.tokens import encoder

    enc = encoder()
    words = []
    for tok in range(256, 60_000):
        w = enc.decode([tok])
        if len(w) >= 4 and w[0] == " " and w[1:].isascii() and w[1:].isalpha() \
                and w[1:].islower() and enc.encode_ordinary(w) == [tok]:
            words.append(w)
    return tuple(words)


def block_text(block_id: int, tokens: int = BLOCK_TOKENS) -> str:
    """The text of prompt block `block_id`: its first `tokens` (<= 512) cl100k_base tokens,
    the same for the same id."""
    words = _words()
    rng = np.random.default_rng(block_id)
    return "".join(words[i] for i in rng.integers(0, len(words), size=tokens))


def synthetic_prompt(input_length: int, hash_ids: list[int]) -> str:
    """A prompt of exactly `input_length` cl100k_base tokens: the texts of its blocks, the
    last one cut to the remainder."""
    parts = []
    for k, h in enumerate(hash_ids):
        parts.append(block_text(h, min(BLOCK_TOKENS, input_length - k * BLOCK_TOKENS)))
    return "".join(parts)


@contextmanager
def _atomic(path: str | Path):
    """Yields a temporary path next to `path`; renamed onto it when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        yield part
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _write_mooncake(df: pl.DataFrame, part: Path) -> None:
    mooncake_records(df).write_ndjson(part)


def _write_vllm_custom(df: pl.DataFrame, part: Path) -> None:
    rec = mooncake_records(df)
    texts = df["prompt_text"] if "prompt_text" in df.columns else None
    with part.open("w", encoding="utf-8") as f:
        for i, (n_in, n_out, ids) in enumerate(rec.select(
                "input_length", "output_length", "hash_ids").iter_rows()):
            text = texts[i] if texts is not None else None
            prompt = text if text else synthetic_prompt(n_in, ids)
            f.write(json.dumps({"prompt": prompt, "output_tokens": n_out}) + "\n")


def _write_burstgpt(df: pl.DataFrame, part: Path) -> None:
    if "arrival_s" not in df.columns or df["arrival_s"].null_count():
        raise InvalidInputError("BurstGPT output needs an arrival time for every request; "
                                "this trace has none: use --format mooncake or vllm-custom")
    sessions = "session_id" in df.columns and df["session_id"].null_count() < df.height
    cols = [pl.col("arrival_s").round(3).alias("Timestamp")]
    if sessions:
        cols.append(pl.col("session_id").cast(pl.Utf8).alias("Session ID"))
    cols += [_text(df, "model").alias("Model"),
             pl.col("prompt_tokens").alias("Request tokens"),
             pl.col("output_tokens").alias("Response tokens"),
             (pl.col("prompt_tokens") + pl.col("output_tokens")).alias("Total tokens"),
             _text(df, "log_type").alias("Log Type")]
    if sessions:
        cols.append((pl.col("elapsed_s") if "elapsed_s" in df.columns
                     else pl.lit(None, dtype=pl.Float64)).alias("Elapsed time"))
    df.select(cols).write_csv(part)


def _text(df: pl.DataFrame, col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Utf8) if col in df.columns else pl.lit(None, dtype=pl.Utf8)


WRITERS: dict[str, Callable[[pl.DataFrame, Path], None]] = {
    "mooncake": _write_mooncake, "vllm-custom": _write_vllm_custom,
    "burstgpt": _write_burstgpt}


def write_requests(df: pl.DataFrame, fmt: str, path: str | Path) -> Path:
    """Write a request frame (`trace_requests` or `synth.synthesize`) as `fmt`, one of
    `REQUEST_FORMATS` (see module docstring); returns the path."""
    if fmt not in WRITERS:
        raise InvalidInputError(f"unknown format {fmt!r}; use one of "
                                f"{', '.join(REQUEST_FORMATS)}")
    with _atomic(path) as part:
        WRITERS[fmt](df, part)
    return Path(path)


def window_parameters(src, trace: str | None = None, window_s: float = 600.0) -> pl.DataFrame:
    """ServeGen-style per-window arrival parameters of a trace (see module docstring): the
    windows `synth.fit_workload` fits, with each family's parameters."""
    from servecast.analytics.arrivals import timestamp_quantization
    from servecast.analytics.synth import fit_windows, gap_distribution

    s = source(src, trace, "llm_requests")
    quantized = timestamp_quantization(s)["quantized"]
    rows = []
    for k, w in enumerate(fit_windows(s, window_s=window_s)):
        shape = scale = None
        if w.rate > 0:
            d = gap_distribution(1.0 / w.rate, w.cv, w.dist)
            shape, scale = float(d.args[0]), float(d.kwds["scale"])
        rows.append({"window": k, "start_s": w.start_s, "duration_s": w.duration_s,
                     "requests": round(w.rate * w.duration_s), "rate": w.rate, "cv": w.cv,
                     "dist": w.dist, "shape": shape, "scale": scale, "quantized": quantized})
    return pl.DataFrame(rows, schema_overrides={"shape": pl.Float64, "scale": pl.Float64})


def export_trace(src, trace: str | None = None, fmt: str = "mooncake",
                 path: str | Path = "trace.jsonl", window_s: float = 600.0) -> tuple[Path, int]:
    """Write a stored trace as `fmt` (one of `FORMATS`) to `path`; returns (path, number of
    requests or windows written). `window_s` is the servegen window (s)."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "servegen":
        df = window_parameters(src, trace, window_s)
        with _atomic(path) as part:
            if Path(path).suffix == ".json":
                part.write_text(json.dumps(df.to_dicts(), indent=1))
            else:
                df.write_csv(part)
        return Path(path), df.height
    df = trace_requests(src, trace)
    return write_requests(df, fmt, path), df.height
