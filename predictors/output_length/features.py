"""Input checks and features of the output-length models (all counts in tokens).

Every feature except `prompt_tokens` is a small integer code (a bucket), so a fitted tree
ensemble is piecewise constant on a small grid and the runtime can serve it from a table.

Codes (0 always means "unknown / not applicable"):
  model, log_type  category index + 1 (categories seen in training)
  turn_b           1..8 = turn within the session (8 = 8 or later)
  prev_out_b       1 + log2 bucket of the previous output in the session (1..15)
  growth_b         prompt growth vs the previous turn: 1 shrank, 2..13 = 1 + log2 bucket of growth
  prefix_b         1 + log2 of the number of prefix blocks shared with an earlier request
  prefix_out_b     1 + log2 bucket of the output of that earlier request
  hour, weekday    1 + hour of day (0..23) / 1 + day of week, from arrival_s (long traces only)
"""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError, UnknownNameError
from servecast.predictors.output_length.buckets import (  # noqa: F401 - re-exported
    context_codes,
    log_bucket,
    log_buckets,
)

CONTEXT = ["turn_b", "prev_out_b", "growth_b"]  # session codes the runtime tracks itself
PREFIX = ["prefix_b", "prefix_out_b"]
TIME = ["hour", "weekday"]
CATEGORIES = ["model", "log_type"]
ALL = ["prompt_tokens", *CATEGORIES, *CONTEXT, *PREFIX, *TIME]
_MASK = (1 << 61) - 1


def to_polars(frame) -> pl.DataFrame:
    """Accept a polars/pandas frame, a dict of columns or a list of row dicts."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, (dict, list)):
        return pl.DataFrame(frame)
    try:
        return pl.from_pandas(frame)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(
            f"expected a polars or pandas frame of llm_requests columns, got {type(frame)}: {e}"
        ) from None


def check_requests(frame, need_output: bool = False) -> pl.DataFrame:
    """Validate an input frame: non-empty, `prompt_tokens` present, finite, >= 0.

    Returns it as polars. Raises InvalidInputError naming the first bad row and the fix.
    """
    df = to_polars(frame)
    if df.height == 0:
        raise InvalidInputError("empty frame: pass at least one request row")
    cols = ["prompt_tokens"] + (["output_tokens"] if need_output else [])
    for col in cols:
        if col not in df.columns:
            raise InvalidInputError(
                f"missing column {col!r} (have: {', '.join(df.columns)}); "
                "pass llm_requests columns")
        s = df[col]
        if not s.dtype.is_numeric():
            raise InvalidInputError(f"column {col!r} must be numeric (tokens), got {s.dtype}")
        v = s.cast(pl.Float64)
        bad = v.is_null() | v.is_nan() | (v < 0) | v.is_infinite()
        if bad.any():
            i = int(bad.arg_max())
            raise InvalidInputError(
                f"row {i}: {col} = {s[i]!r}; token counts must be finite numbers >= 0 "
                "(drop or fix the row)")
    return df


class Encoder:
    """Turns canonical request frames into the integer-coded feature matrix (fit once)."""

    def __init__(self, categories: dict[str, list[str]] | None = None,
                 use_time: bool = False, use_prefix: bool = False,
                 columns: list[str] | None = None):
        self.categories = categories or {c: [] for c in CATEGORIES}
        self.use_time, self.use_prefix = use_time, use_prefix
        self.columns = columns or list(ALL)
        # prefix index: rolling hash of a block prefix -> output tokens of its latest request
        self.prefix_index: dict[int, int] = {}

    # -- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, df: pl.DataFrame, columns: list[str] | None = None) -> Encoder:
        """Learn category levels and which feature groups the data supports."""
        cats = {}
        for c in CATEGORIES:
            cats[c] = (sorted(df[c].drop_nulls().unique().to_list()) if c in df.columns else [])
        span = 0.0
        if "arrival_s" in df.columns and df["arrival_s"].drop_nulls().len():
            span = float(df["arrival_s"].max() - df["arrival_s"].min())
        use_time = span >= 2 * 86400
        use_prefix = ("prefix_hashes" in df.columns
                      and df["prefix_hashes"].drop_nulls().len() > 0)
        cols = list(columns or ALL)
        if not use_time:
            cols = [c for c in cols if c not in TIME]
        if not use_prefix:
            cols = [c for c in cols if c not in PREFIX]
        return cls(cats, use_time, use_prefix, cols)

    def state(self) -> dict:
        """JSON-able description (the prefix index is saved separately)."""
        return {"categories": self.categories, "use_time": self.use_time,
                "use_prefix": self.use_prefix, "columns": self.columns}

    @classmethod
    def from_state(cls, state: dict) -> Encoder:
        return cls(state["categories"], state["use_time"], state["use_prefix"], state["columns"])

    # -- encoding --------------------------------------------------------------------------
    def category_code(self, col: str, value: str | None) -> int:
        """Code of one category value (0 = None); raises UnknownNameError for unseen values."""
        if value is None:
            return 0
        levels = self.categories[col]
        try:
            return levels.index(value) + 1
        except ValueError:
            known = ", ".join(map(repr, levels)) or "(none: trained without this column; pass None)"
            raise UnknownNameError(
                f"unknown {col} {value!r}; this model knows: {known}") from None

    def transform(self, df: pl.DataFrame, learn_prefixes: bool = False) -> np.ndarray:
        """Feature matrix (rows aligned with `df`, columns `self.columns`, float64).

        Session features use earlier rows of the same session in `df` (by `turn`, else row
        order); prefix features use every earlier row (and, once fitted, the training rows).
        With `learn_prefixes` the rows' outputs are added to the prefix index.
        """
        n = df.height
        feats: dict[str, np.ndarray] = {
            "prompt_tokens": df["prompt_tokens"].cast(pl.Float64).to_numpy()}
        for c in CATEGORIES:
            if c in self.columns:
                feats[c] = self._category_codes(df, c)
        if any(c in self.columns for c in CONTEXT):
            feats.update(self._session_codes(df))
        if self.use_prefix and any(c in self.columns for c in PREFIX):
            feats.update(self._prefix_codes(df, learn_prefixes))
        if self.use_time:
            t = (df["arrival_s"].cast(pl.Float64).to_numpy() if "arrival_s" in df.columns
                 else np.full(n, np.nan))
            feats["hour"] = np.where(np.isnan(t), 0, 1 + np.floor(t / 3600) % 24)
            feats["weekday"] = np.where(np.isnan(t), 0, 1 + np.floor(t / 86400) % 7)
        out = np.zeros((n, len(self.columns)))
        for j, c in enumerate(self.columns):
            if c in feats:
                out[:, j] = feats[c]
        return out

    def _category_codes(self, df: pl.DataFrame, col: str) -> np.ndarray:
        if col not in df.columns:
            return np.zeros(df.height)
        levels = self.categories[col]
        s = df[col].cast(pl.Utf8)
        unknown = s.drop_nulls().unique().filter(~s.drop_nulls().unique().is_in(levels))
        if unknown.len():
            self.category_code(col, unknown[0])  # raises with the list of known values
        mapping = pl.DataFrame({col: levels, "_code": list(range(1, len(levels) + 1))},
                               schema={col: pl.Utf8, "_code": pl.Int64})
        codes = s.to_frame().join(mapping, on=col, how="left", maintain_order="left")["_code"]
        return codes.fill_null(0).to_numpy().astype(np.float64)

    def _session_codes(self, df: pl.DataFrame) -> dict[str, np.ndarray]:
        n = df.height
        if "session_id" not in df.columns or df["session_id"].null_count() == n:
            return {c: np.zeros(n) for c in CONTEXT}
        order = ["turn"] if "turn" in df.columns else []
        d = df.select(
            pl.col("session_id"),
            (pl.col("turn") if "turn" in df.columns else pl.lit(None, pl.Int64)).alias("turn"),
            pl.col("prompt_tokens").cast(pl.Float64),
            (pl.col("output_tokens").cast(pl.Float64) if "output_tokens" in df.columns
             else pl.lit(None, pl.Float64)).alias("out"),
        ).with_row_index("_i")
        d = d.sort(["session_id", *order, "_i"], nulls_last=True).with_columns(
            pl.int_range(1, pl.len() + 1).over("session_id").alias("_k"),
            pl.col("out").shift(1).over("session_id").alias("prev_out"),
            (pl.col("prompt_tokens") - pl.col("prompt_tokens").shift(1).over("session_id"))
            .alias("growth"),
        ).sort("_i")
        has = d["session_id"].is_not_null().to_numpy()
        turn = d["turn"].fill_null(d["_k"]).clip(1, 8).to_numpy().astype(np.float64)
        prev = log_buckets(d["prev_out"].fill_null(np.nan).to_numpy())
        g = d["growth"].fill_null(np.nan).to_numpy()
        growth = np.where(np.isnan(g), 0, np.where(g < 0, 1, 1 + log_buckets(g)))
        return {"turn_b": np.where(has, turn, 0), "prev_out_b": np.where(has, prev, 0),
                "growth_b": np.where(has, growth, 0)}

    def _prefix_codes(self, df: pl.DataFrame, learn: bool) -> dict[str, np.ndarray]:
        n = df.height
        blocks = np.zeros(n)
        pout = np.zeros(n)
        if "prefix_hashes" not in df.columns:
            return {"prefix_b": blocks, "prefix_out_b": pout}
        hashes = df["prefix_hashes"].to_list()
        outs = (df["output_tokens"].to_list() if "output_tokens" in df.columns else [None] * n)
        index = self.prefix_index if learn else dict(self.prefix_index)
        for i, hs in enumerate(hashes):
            if not hs:
                continue
            h, best, best_out, keys = 0, 0, None, []
            for k, b in enumerate(hs, 1):
                h = (h * 1_000_003 + int(b) + 1) & _MASK
                keys.append(h)
                if h in index:
                    best, best_out = k, index[h]
            blocks[i] = log_bucket(best) if best else 0
            pout[i] = log_bucket(best_out) if best_out is not None else 0
            if outs[i] is not None:  # the request is observed once it completes
                for key in keys:
                    index[key] = int(outs[i])
        return {"prefix_b": blocks, "prefix_out_b": pout}
