"""The environment the pinned replay tools (GuideLLM and AIPerf in `.venv-tools`) run in.

servecast's sentence-embedding loader sets `HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE` in its
own process (the packaged encoder must never reach the Hub), and child processes inherit
them. AIPerf 0.13.0 in offline mode resolves a tokenizer given as a local directory as a Hub
repo id and fails (`HFValidationError: Repo id must be in the form ...`), so the tools get
the environment without those two variables: every tokenizer they are given here is a local
directory, so they reach no network either way."""

from __future__ import annotations

import os

#: set by `predictors.output_length.embeddings.load_encoder`; dropped for the tools
HUB_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def tools_env(**extra: str) -> dict[str, str]:
    """`os.environ` without the Hub offline switches, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in HUB_OFFLINE}
    env.update(extra)
    return env
