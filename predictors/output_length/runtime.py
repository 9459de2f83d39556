"""The scheduler-facing output-length runtime (used by `servecast.Estimator`).

`Runtime.load(dir)` reads a saved output-length model. Table models (metadata, baselines) are
served from their precomputed LengthTable: one dict lookup and one bisect per call, tuples
pre-calibrated. Models with the prompt-length history features (history.py) are served from
their compiled trees (forest.py: a few numpy ops over all trees per call), the history kept
by `LengthHistory`. Session context (turn, previous output, prompt growth) and the history
come from `observe`, which the scheduler calls when a request completes; called in arrival
order with each request's `arrival_s`, the estimates equal the model's `predict` on the same
sequence. `observe` also scores the estimate served for that request (matched by
`request_id`, else by session and prompt tokens) and updates the calibration online
(calibration.py: conformal window, adaptive levels and the learned level). Imports numpy only
on the single-call path; never DuckDB or Lightning.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from pathlib import Path
from typing import NamedTuple

import numpy as np

from servecast.errors import InvalidInputError, ModelVersionError, UnknownNameError
from servecast.predictors.base import check_keys, read_card, read_json
from servecast.predictors.output_length.calibration import Calibrator, OnlineCalibration
from servecast.predictors.output_length.forest import FILE as FOREST_FILE
from servecast.predictors.output_length.forest import Forest
from servecast.predictors.output_length.history import HISTORY, LengthHistory
from servecast.predictors.output_length.session_state import SessionTurns
from servecast.predictors.output_length.table import FILE as TABLE_FILE
from servecast.predictors.output_length.table import LengthTable

#: format of an output-length model dir's state.json and companions (1: before the
#: prompt-length history features; such dirs are refused with ModelVersionError)
STATE_FORMAT = 2


def read_state(path: Path) -> dict:
    """The state.json of a saved output-length model (ModelVersionError for another format)."""
    file = path / "state.json"
    state = read_json(file) if file.is_file() else {}
    if state.get("format") != STATE_FORMAT:
        raise ModelVersionError(
            f"{path}: output-length model state format {state.get('format', 1)}, this "
            f"servecast reads format {STATE_FORMAT}; retrain it with this version")
    return check_keys(state, file, {"encoder": dict, "encoder.columns": list,
                                    "encoder.categories": dict, "calibrator": dict})


def from_heads(out: np.ndarray, log_target: bool) -> np.ndarray:
    """Raw (n, 4) tokens from the heads' outputs (n, 4): expm1 of the median head where it
    fit log1p(tokens). numpy only (the runtime applies the same)."""
    if not log_target:
        return out
    out = np.array(out, dtype=np.float64)
    out[:, 0] = np.expm1(out[:, 0])
    return out


class LengthEstimate(NamedTuple):
    """Output-length estimate in tokens: quantiles and mean."""

    p50: float
    p90: float
    p99: float
    mean: float


def check_tokens(prompt_tokens) -> float:
    """A finite, non-negative prompt token count (raises InvalidInputError otherwise)."""
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, (int, float, np.number)):
        raise InvalidInputError(
            f"prompt_tokens must be a number of tokens, got {type(prompt_tokens).__name__} "
            f"{prompt_tokens!r}")
    x = float(prompt_tokens)
    if not (x >= 0.0) or x == math.inf:
        raise InvalidInputError(f"prompt_tokens = {prompt_tokens!r}; must be finite and >= 0")
    return x


class Runtime:
    """Fast output-length estimates from a saved model dir (see `load`)."""

    kind = "output_length"

    @classmethod
    def load(cls, path: str | Path) -> Runtime:
        """Load the model saved in `path` (ModelVersionError for a foreign/old dir)."""
        path = Path(path)
        card = read_card(path, "output_length")
        if card.get("model_class") == "text":
            from servecast.predictors.output_length.text_runtime import TextRuntime

            return TextRuntime(path, card)
        if not ((path / TABLE_FILE).is_file() or (path / FOREST_FILE).is_file()):
            raise ModelVersionError(f"{path}: no {TABLE_FILE}; retrain with this servecast")
        return cls(path, card)

    def __init__(self, path: Path, card: dict):
        self.path, self.card = path, card
        state = read_state(path)
        self.encoder_state = state["encoder"]
        self.columns: list[str] = state["encoder"]["columns"]
        cats = state["encoder"]["categories"]
        self.codes = {c: {v: i + 1 for i, v in enumerate(cats.get(c, []))}
                      for c in ("model", "log_type")}
        self.uses_context = any(c in self.columns for c in ("turn_b", "prev_out_b", "growth_b"))
        self.online = OnlineCalibration(Calibrator.from_state(state["calibrator"]))
        self.calibrator = self.online.calibrator
        self.history: LengthHistory | None = None
        self.forest: Forest | None = None
        if any(c in self.columns for c in HISTORY):
            self.history = LengthHistory.load(path)
            self.forest = Forest.load(path)
            self.table, self.edges = None, []
            col = {c: j for j, c in enumerate(self.columns)}
            self._hist_cols = [col[c] for c in HISTORY]
            self._code_cols = [col.get(c) for c in ("model", "log_type", "turn_b",
                                                    "prev_out_b", "growth_b")]
        else:
            self.table = LengthTable.load(path)
            self.edges = self.table.edges.tolist()
        self.sessions = SessionTurns()
        self._rows: dict[tuple, list[tuple]] = {}  # raw estimates per prompt interval
        self._boosters = None
        self._encoder = None  # batch-path Encoder (output_length_batch)

    # -- single call -----------------------------------------------------------------------
    def output_length(self, prompt_tokens, model: str | None = None, log_type: str | None = None,
                      prompt_text: str | None = None, session_id: str | None = None,
                      arrival_s: float | None = None, request_id: str | None = None
                      ) -> LengthEstimate:
        """Estimate for one request (tokens). Session context and prompt-length history are
        what `observe` recorded; `arrival_s` (seconds, the clock `observe` was given) feeds
        the time since the last request of the same prompt length (unknown without it).
        The raw estimate is kept for `observe` (under `request_id`, else session and prompt
        tokens) to calibrate with."""
        x = check_tokens(prompt_tokens)
        try:
            m = self.codes["model"][model] if model is not None else 0
            lg = self.codes["log_type"][log_type] if log_type is not None else 0
        except KeyError:
            raise self._unknown(model, log_type) from None
        ctx = (0, 0, 0)
        if session_id is not None and self.uses_context:
            ctx = self.sessions.context(session_id, x)
        if self.forest is not None:
            raw = self._forest_estimate(x, (m, lg, *ctx), arrival_s)
        else:
            row = self._rows.get((ctx, m, lg))
            if row is None:
                row = self._row(ctx, m, lg)
            raw = row[bisect_left(self.edges, x)]
        return LengthEstimate(*self.online.serve(self.online.key(request_id, session_id, x),
                                                 *raw))

    def observe(self, session_id: str | None, prompt_tokens: float, output_tokens: float,
                arrival_s: float | None = None, request_id: str | None = None) -> bool:
        """Record a completed request (tokens; its arrival in seconds where known) so later
        calls see it: the session's turn / previous output, the prompt-length history, and
        the calibration (when its estimate is pending). Returns whether it calibrated."""
        calibrated = self.online.learn(self.online.key(request_id, session_id,
                                                       check_tokens(prompt_tokens)),
                                       output_tokens)
        if self.history is not None:
            self.history.observe(prompt_tokens, output_tokens, arrival_s)
        if session_id is not None:
            self.sessions.record(session_id, prompt_tokens, output_tokens)
        return calibrated

    def _forest_estimate(self, x: float, codes: tuple, arrival_s) -> list[float]:
        """Raw (p50, p90, p99, mean) from the compiled trees: row = prompt, codes, history
        codes (others 0)."""
        row = [0.0] * len(self.columns)
        row[0] = x
        for j, v in zip(self._code_cols, codes, strict=True):
            if j is not None:
                row[j] = v
        for j, v in zip(self._hist_cols, self.history.codes(x, arrival_s), strict=True):
            row[j] = v
        return self.forest.predict_row(row).tolist()

    def _unknown(self, model, log_type) -> UnknownNameError:
        for col, v in (("model", model), ("log_type", log_type)):
            if v is not None and v not in self.codes[col]:
                known = ", ".join(map(repr, self.codes[col])) or \
                    "(none: trained without this column; pass None)"
                return UnknownNameError(f"unknown {col} {v!r}; this model knows: {known}")
        return UnknownNameError(f"unknown model/log_type {model!r}/{log_type!r}")

    def _row(self, ctx: tuple, m: int, lg: int) -> list[tuple]:
        """Raw estimates of every prompt interval for one (context, model, log type)."""
        c = self.table.context_of(ctx)
        raw = self.table.values[c, m, lg] if c is not None else self._raw_context(ctx, m, lg)
        row = [tuple(map(float, r)) for r in raw.astype(np.float64)]
        self._rows[(ctx, m, lg)] = row
        return row

    def _raw_context(self, ctx: tuple, m: int, lg: int) -> np.ndarray:
        """Raw values for a session context not in the table (boosters, once per context)."""
        X = self._grid(ctx, m, lg)
        return self._booster_raw(X)

    def _grid(self, ctx: tuple, m: int, lg: int) -> np.ndarray:
        reps = np.concatenate([self.table.edges, [self.table.edges[-1] + 1.0
                                                  if len(self.table.edges) else 0.0]])
        X = np.zeros((len(reps), len(self.columns)))
        values = {"prompt_tokens": reps, "model": m, "log_type": lg, "turn_b": ctx[0],
                  "prev_out_b": ctx[1], "growth_b": ctx[2]}
        for j, c in enumerate(self.columns):
            if c in values:
                X[:, j] = values[c]
        return X

    def _booster_raw(self, X: np.ndarray) -> np.ndarray:
        if self.card.get("model_class") != "metadata":
            raise InvalidInputError(f"{self.path}: model has no boosters for this input")
        if self._boosters is None:
            import lightgbm as lgb

            self._boosters = [lgb.Booster(model_file=str(p))
                              for p in sorted(self.path.glob("head*.txt"))]
        out = np.column_stack([b.predict(X, num_threads=1) for b in self._boosters])
        return from_heads(out, bool(self.card.get("params", {}).get("log_target")))

    # -- batch -----------------------------------------------------------------------------
    def output_length_batch(self, frame):
        """Frame of llm_requests columns -> polars frame[p50, p90, p99, mean] (tokens).

        Session context is taken from earlier rows of the same session in the frame; prefix
        and time features (where the model uses them) from the frame's columns.
        """
        import polars as pl

        from servecast.predictors.output_length.features import Encoder, check_requests

        df = check_requests(frame)
        if self._encoder is None:  # built once: the saved prefix index is read on first use
            self._encoder = Encoder.from_state(self.encoder_state)
            if self._encoder.use_prefix and (self.path / "prefix_index.npz").is_file():
                with np.load(self.path / "prefix_index.npz") as z:
                    self._encoder.prefix_index = dict(zip(z["keys"].tolist(),
                                                          z["values"].tolist(), strict=True))
        if self.history is not None:  # what `observe` has recorded so far
            self._encoder.history = self.history
        X = self._encoder.transform(df)
        raw = self.forest.predict(X) if self.forest is not None else self._table_raw(X)
        q = self.calibrator.apply(raw[:, :3])
        return pl.DataFrame({"p50": q[:, 0], "p90": q[:, 1], "p99": q[:, 2],
                             "mean": self.calibrator.mean(raw[:, 3])})

    def predict(self, frame) -> dict[str, np.ndarray]:
        """Columns p50, p90, p99, mean of `output_length_batch` (the Runtime protocol)."""
        out = self.output_length_batch(frame)
        return {c: out[c].to_numpy() for c in out.columns}

    def _table_raw(self, X: np.ndarray) -> np.ndarray:
        """Raw (n, 4) values of feature rows `X` from the LengthTable (the boosters where a
        row has dense prefix/time codes or a session context the table lacks)."""
        col = {c: j for j, c in enumerate(self.columns)}
        dense = [c for c in self.columns if c in ("prefix_b", "prefix_out_b", "hour", "weekday")]
        ctx = np.zeros((len(X), 3), dtype=np.int64)
        for k, name in enumerate(("turn_b", "prev_out_b", "growth_b")):
            if name in col:
                ctx[:, k] = X[:, col[name]]
        keys, inv = np.unique(ctx[:, 0] * 10_000 + ctx[:, 1] * 100 + ctx[:, 2],
                              return_inverse=True)
        found = [self.table.context_of((int(k) // 10_000, int(k) // 100 % 100, int(k) % 100))
                 for k in keys]
        if dense and np.any(X[:, [col[c] for c in dense]] != 0) or None in found:
            return self._booster_raw(X)
        rows = np.array(found, dtype=np.intp)[inv.ravel()]
        m = X[:, col["model"]].astype(np.intp) if "model" in col else np.zeros(len(X), np.intp)
        lg = (X[:, col["log_type"]].astype(np.intp) if "log_type" in col
              else np.zeros(len(X), np.intp))
        return self.table.lookup(rows, m, lg, X[:, 0]).astype(np.float64)


def serve_replay(runtime, frame, observe: bool = True) -> np.ndarray:
    """Estimates (n, 4: p50, p90, p99, mean tokens) a scheduler gets serving the rows of
    `frame` in order with `runtime` (a Runtime, TextRuntime or Estimator): per row
    `output_length(..., request_id=)`, then with `observe` its completion reported through
    `observe` / `observe_output` (same request_id), which updates the online calibration."""
    tell = getattr(runtime, "observe_output", None) or runtime.observe
    out = np.zeros((frame.height, 4))
    for i, r in enumerate(frame.iter_rows(named=True)):
        rid = str(r.get("request_id", i))
        sid = r.get("session_id")
        out[i] = runtime.output_length(r["prompt_tokens"], prompt_text=r.get("prompt_text"),
                                       session_id=sid, request_id=rid)
        if observe:
            tell(sid, r["prompt_tokens"], r["output_tokens"], request_id=rid)
    return out
