"""Runtime of the text model: embed the prompt (MiniLM, offline; the model's fine-tuned copy
where it has one), project it on the saved PCA and run the LightGBM heads. Imports
sentence-transformers/torch/lightgbm on load; never DuckDB or Lightning."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servecast.errors import InvalidInputError
from servecast.predictors.output_length.calibration import Calibrator, OnlineCalibration
from servecast.predictors.output_length.conversation import ConversationMemory
from servecast.predictors.output_length.embeddings import embed
from servecast.predictors.output_length.runtime import LengthEstimate, check_tokens, read_state
from servecast.predictors.output_length.session_state import RecentSessions, SessionTurns
from servecast.predictors.output_length.text import (
    design,
    head_outputs,
    load_heads,
    metadata,
    text_encoder,
)


class TextRuntime:
    """Per call: one embedding (the dominant cost), the nearest training prompts and four
    boosters on one row (timings: docs/results.md#estimator-hot-path)."""

    def __init__(self, path: Path, card: dict):
        self.path, self.card = path, card
        state = read_state(path)
        self.encoder_state = state["encoder"]
        self.online = OnlineCalibration(Calibrator.from_state(state["calibrator"]))
        self.calibrator = self.online.calibrator
        self.boosters, self.pca, self.index, self.ridge, self.lexicon = load_heads(path)
        self.model = text_encoder(path)
        self.sessions = SessionTurns()
        self.memory = ConversationMemory(RecentSessions())
        self.asked = RecentSessions()  # session -> embedding of its last estimate

    def observe(self, session_id: str | None, prompt_tokens: float, output_tokens: float,
                arrival_s: float | None = None, request_id: str | None = None) -> bool:
        """Record a completed request of a session: turn / previous output for the next, and
        for the conversation memory its output with the prompt of the session's last
        `output_length` call (without one, the memory's similarity features skip this turn);
        and the calibration, when its estimate is pending (runtime.Runtime.observe). Returns
        whether it calibrated."""
        calibrated = self.online.learn(
            self.online.key(request_id, session_id, check_tokens(prompt_tokens)), output_tokens)
        if session_id is not None:
            self.sessions.record(session_id, prompt_tokens, output_tokens)
            self.memory.add(session_id, self.asked.pop(session_id, None), output_tokens)
        return calibrated

    def _raw(self, E: np.ndarray, meta: np.ndarray, texts: list[str]) -> np.ndarray:
        return head_outputs(self.boosters, design(E, meta, texts, self.pca, self.index,
                                                  ridge=self.ridge, lexicon=self.lexicon))

    def output_length(self, prompt_tokens, model=None, log_type=None, prompt_text=None,
                      session_id=None, arrival_s=None, request_id=None) -> LengthEstimate:
        """Estimate (tokens) for one request; `prompt_text` is required. The raw estimate is
        kept for `observe` (under `request_id`, else session and prompt tokens)."""
        x = check_tokens(prompt_tokens)
        if not isinstance(prompt_text, str):
            raise InvalidInputError("the text model needs prompt_text (a string); load a "
                                    "metadata model for requests without text")
        ctx = (0, 0, 0)
        E = embed([prompt_text], model=self.model)
        if session_id is not None:
            ctx = self.sessions.context(session_id, x)
            self.asked[session_id] = E[0]
        meta = np.array([[x, *ctx, *self.memory.features(session_id, E[0])]])
        raw = self._raw(E, meta, [prompt_text])[0].tolist()
        return LengthEstimate(*self.online.serve(self.online.key(request_id, session_id, x),
                                                 *raw))

    kind = "output_length"

    def predict(self, frame) -> dict[str, np.ndarray]:
        """Columns p50, p90, p99, mean of `output_length_batch` (the Runtime protocol)."""
        out = self.output_length_batch(frame)
        return {c: out[c].to_numpy() for c in out.columns}

    def output_length_batch(self, frame):
        """Frame with prompt_tokens and prompt_text -> polars frame[p50, p90, p99, mean]."""
        import polars as pl

        from servecast.predictors.output_length.features import Encoder, check_requests

        df = check_requests(frame)
        if "prompt_text" not in df.columns or df["prompt_text"].null_count():
            raise InvalidInputError("the text model needs a prompt_text value on every row")
        texts = df["prompt_text"].to_list()
        E = embed(texts, model=self.model)
        meta = metadata(Encoder.from_state(self.encoder_state), df, E)
        raw = self._raw(E, meta, texts)
        out = np.column_stack([self.calibrator.apply(raw[:, :3]), self.calibrator.mean(raw[:, 3])])
        return pl.DataFrame(out, schema=["p50", "p90", "p99", "mean"], orient="row")
