"""The environment the pinned replay tools (GuideLLM and AIPerf in `.venv-tools`) run in.

servecast's sentence-embedding loader sets `HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE` in its
own process (the packaged encoder must never reach the Hub), and child processes inherit
them. AIPerf 0.13.0 in offline mode resolves a tokenizer given as a local directory as a Hub
repo id and fails (`HFValidationError: Repo id must be in the form ...`), so the tools get
the environment without those two variables: every tokenizer they are given here is a local
directory, so they reach no network either way.

AIPerf also writes its memory-mapped dataset under the system temp directory
(`aiperf_mmap_<id>/`) and leaves it there; given a `workdir`, it writes there instead, so a
run leaves nothing outside the caller's own (temporary) folder."""

from __future__ import annotations

import os
from pathlib import Path

#: set by `predictors.output_length.embeddings.load_encoder`; dropped for the tools
HUB_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def tools_env(workdir: Path | None = None, **extra: str) -> dict[str, str]:
    """`os.environ` without the Hub offline switches, plus `extra`; with `workdir`, AIPerf's
    memory-mapped datasets and their cache go under it."""
    env = {k: v for k, v in os.environ.items() if k not in HUB_OFFLINE}
    if workdir is not None:
        env["AIPERF_DATASET_MMAP_BASE_PATH"] = str(workdir)
        env["AIPERF_DATASET_MMAP_CACHE_DIR"] = str(Path(workdir) / "aiperf_mmap_cache")
    env.update(extra)
    return env
