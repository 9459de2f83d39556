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
  same_*, near_*, recent_med_b
                   prompt-length history: outputs of earlier requests with the same prompt
                   length / length bucket / any length (history.py)
"""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError, UnknownNameError
from servecast.frames import to_polars
from servecast.predictors.output_length.buckets import (  # noqa: F401 - re-exported
    context_codes,
    log_bucket,
    log_buckets,
)
from servecast.predictors.output_length.history import (
    HISTORY,
    LengthHistory,
    history_codes,
    visibility_positions,
)

CONTEXT = ["turn_b", "prev_out_b", "growth_b"]  # session codes the runtime tracks itself
PREFIX = ["prefix_b", "prefix_out_b"]
TIME = ["hour", "weekday"]
CATEGORIES = ["model", "log_type"]
ALL = ["prompt_tokens", *CATEGORIES, *CONTEXT, *PREFIX, *TIME, *HISTORY]
_MASK = (1 << 61) - 1


def float_col(df: pl.DataFrame, name: str) -> np.ndarray:
    """Column `name` as float64 numpy, NaN where null or where the column is absent."""
    if name not in df.columns:
        return np.full(df.height, np.nan)
    return df[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def visibility(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(when each row asks, from when its output is known) on one axis: arrival and estimated
    finish (history.finish_s) where every row has an arrival, else the row index for both."""
    return visibility_positions(float_col(df, "arrival_s"), float_col(df, "output_tokens"))


def check_requests(frame, need_output: bool = False) -> pl.DataFrame:
    """Validate an input frame: non-empty, `prompt_tokens` present, finite, >= 0.

    Returns it as polars. Raises InvalidInputError naming the first bad row and the fix.
    """
    df = to_polars(frame, "requests frame (llm_requests columns)")
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
        # prompt-length history of the requests learned so far (history.py)
        self.history = LengthHistory()

    @property
    def use_history(self) -> bool:
        """Whether the prompt-length history features are among the columns."""
        return any(c in self.columns for c in HISTORY)

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

    def transform(self, df: pl.DataFrame, learn: bool = False) -> np.ndarray:
        """Feature matrix (rows aligned with `df`, columns `self.columns`, float64).

        Session features use earlier rows of the same session in `df` (by `turn`, else row
        order); prefix and prompt-length history features the rows finished before the row
        arrived (`visibility`, history.py) and, once fitted, the training rows. With `learn`
        the rows' outputs are added to the prefix index and the history.
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
            feats.update(self._prefix_codes(df, learn))
        if self.use_history:
            feats.update(self._history_codes(df, learn))
        if self.use_time:
            t = float_col(df, "arrival_s")
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

    def _history_codes(self, df: pl.DataFrame, learn: bool) -> dict[str, np.ndarray]:
        """Prompt-length history codes (history.py) after `self.history`: each row sees the
        outputs finished before it arrived (`visibility`)."""
        return history_codes(float_col(df, "prompt_tokens"), float_col(df, "output_tokens"),
                             float_col(df, "arrival_s"), self.history, learn)

    def _prefix_codes(self, df: pl.DataFrame, learn: bool) -> dict[str, np.ndarray]:
        """Longest block prefix each row shares with a request finished before it arrived
        (rows of `df` by `visibility`, then the prefix index) and the output of the latest
        such request. Vectorized (`_prefix_codes_loop` is the event-by-event reference; same
        results)."""
        n = df.height
        if "prefix_hashes" not in df.columns:
            return {"prefix_b": np.zeros(n), "prefix_out_b": np.zeros(n)}
        if n <= 32:  # a few rows (the runtime's calls): the loop has less overhead
            return self._prefix_codes_loop(df, learn)
        hs = df["prefix_hashes"]
        lens = hs.list.len().fill_null(0).to_numpy().astype(np.int64)
        row = np.repeat(np.arange(n, dtype=np.int64), lens)
        flat = hs.explode().drop_nulls().to_numpy()
        if len(flat) != len(row):
            raise InvalidInputError("prefix_hashes must be lists of integers without nulls")
        blocks = flat.astype(np.int64).view(np.uint64) if flat.dtype.kind == "i" \
            else flat.astype(np.uint64)
        # position k (1-based) of each block in its row; rolling hash over positions, which
        # equals the scalar (h * 1_000_003 + b + 1) & _MASK: uint64 wraps mod 2**64, _MASK
        # keeps the low 61 bits
        starts = np.cumsum(lens) - lens
        k = np.arange(len(row), dtype=np.int64) - np.repeat(starts, lens) + 1
        keys = np.zeros(len(row), np.uint64)
        mul, mask = np.uint64(1_000_003), np.uint64(_MASK)
        by_len = np.argsort(-lens, kind="stable")  # rows longest first: the rows still
        first = starts[by_len]                     # hashing at position p are a prefix
        alive = np.searchsorted(-lens[by_len], -np.arange(1, int(lens.max(initial=0)) + 1),
                                side="right")      # number of rows with >= p blocks
        h = np.zeros(n, np.uint64)
        for p, cnt in enumerate(alive):
            at = first[:cnt] + p
            h[:cnt] = (h[:cnt] * mul + blocks[at] + np.uint64(1)) & mask
            keys[at] = h[:cnt]
        keys = keys.astype(np.int64)  # < 2**61: same values as the Python ints
        outs = float_col(df, "output_tokens")
        qpos, vis = visibility(df)
        # what each block occurrence sees: the output of the latest request with that block
        # key that finished before its row arrived (history.py's rule) ...
        occ = pl.DataFrame({"occ": np.arange(len(keys)), "key": keys, "i": qpos[row]})
        seen_rows = np.flatnonzero(~np.isnan(outs[row]))
        done = pl.DataFrame({"key": keys[seen_rows], "i": vis[row[seen_rows]],
                             "out": outs[row[seen_rows]]}).sort("i", maintain_order=True)
        seen = occ.sort("i", "occ").join_asof(
            done, on="i", by="key", strategy="backward", allow_exact_matches=False,
            check_sortedness=False).sort("occ")["out"].fill_null(np.nan).to_numpy().copy()
        if self.prefix_index:  # ... else the output learned before this frame
            known_k, known_v = self._index_arrays()
            miss = np.flatnonzero(np.isnan(seen))
            j = np.searchsorted(known_k, keys[miss]).clip(0, len(known_k) - 1)
            hit = known_k[j] == keys[miss]
            seen[miss[hit]] = known_v[j[hit]]
        matched = np.flatnonzero(~np.isnan(seen))  # row-major, k ascending within a row
        rm = row[matched]
        last = matched[np.r_[rm[1:] != rm[:-1], True]] if len(matched) else matched
        best = np.zeros(n)
        best_out = np.full(n, np.nan)
        best[row[last]] = k[last]
        best_out[row[last]] = seen[last]
        if learn and len(done):  # per key, the output of its latest finished row
            latest = done.group_by("key", maintain_order=True).last()
            self.prefix_index.update(zip(latest["key"].to_list(),
                                         latest["out"].cast(pl.Int64).to_list(), strict=True))
            self._index_cache = None
        return {"prefix_b": np.where(best > 0, log_buckets(best), 0).astype(np.float64),
                "prefix_out_b": log_buckets(best_out).astype(np.float64)}

    def _index_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The prefix index as sorted (keys, values) arrays (cached until it changes)."""
        cache = getattr(self, "_index_cache", None)
        stamp = (id(self.prefix_index), len(self.prefix_index))
        if cache is None or cache[2] != stamp:
            keys = np.fromiter(self.prefix_index.keys(), np.int64, len(self.prefix_index))
            vals = np.fromiter(self.prefix_index.values(), np.int64, len(self.prefix_index))
            o = np.argsort(keys, kind="stable")
            cache = (keys[o], vals[o], stamp)
            self._index_cache = cache
        return cache[0], cache[1]

    def _prefix_codes_loop(self, df: pl.DataFrame, learn: bool) -> dict[str, np.ndarray]:
        """Event-by-event reference of `_prefix_codes`."""
        n = df.height
        blocks = np.zeros(n)
        pout = np.zeros(n)
        if "prefix_hashes" not in df.columns:
            return {"prefix_b": blocks, "prefix_out_b": pout}
        hashes = df["prefix_hashes"].to_list()
        outs = (df["output_tokens"].to_list() if "output_tokens" in df.columns else [None] * n)
        index = self.prefix_index if learn else dict(self.prefix_index)
        qpos, vis = visibility(df)
        # events in time order: a row asks at arrival (0), is observed once finished (1);
        # an output finishing exactly when a row arrives is not seen by it (strictly before)
        events = sorted([(qpos[i], 0, i) for i in range(n)] +
                        [(vis[i], 1, i) for i in range(n) if outs[i] is not None])
        for _, observed, i in events:
            asks = not observed
            hs = hashes[i]
            if not hs:
                continue
            h, best, best_out, keys = 0, 0, None, []
            for k, b in enumerate(hs, 1):
                h = (h * 1_000_003 + int(b) + 1) & _MASK
                keys.append(h)
                if asks and h in index:
                    best, best_out = k, index[h]
            if asks:
                blocks[i] = log_bucket(best) if best else 0
                pout[i] = log_bucket(best_out) if best_out is not None else 0
            else:
                for key in keys:
                    index[key] = int(outs[i])
        if learn:
            self._index_cache = None
        return {"prefix_b": blocks, "prefix_out_b": pout}
