"""Prompt-length history features: what earlier requests with the same (or a similar) prompt
length produced (codes; counts in tokens, times in seconds).

Identical prompt lengths recur in production traces (templates, retried or repeated prompts),
and the output of an earlier request with exactly the same `prompt_tokens` is a strong hint
for the next one. For each request, using only requests FINISHED before it arrived (rows
with an `output_tokens` value; the model's training rows first, then rows of the frame):

  same_last_b    1 + log2 bucket of the output of the latest request with the same prompt_tokens
  same_last2_b   the same for the second-latest such request
  same_n_b       1 + log2 bucket of the number of such requests (1 = none)
  same_mean_b    1 + log2 bucket of their mean output
  same_gap_b     1 + log2 bucket of the seconds since the latest one arrived (needs arrival_s)
  near_last_b    1 + log2 bucket of the latest output in the same length bucket
                 (prompt_tokens // NEAR_WIDTH)
  near_med_b     ... and of the median of that bucket's last NEAR_KEEP outputs
  recent_med_b   1 + log2 bucket of the median of the last RECENT_KEEP outputs of any request
                 (0 until RECENT_MIN are known)

An output is known only once its request has finished. Where every row has an arrival, the
vectorized form lets row j's output count for row i only if j finished before i arrived,
with j's finish estimated as `finish_s` = arrival + TTFT_S + DECODE_S_PER_TOKEN x output
(traces record arrivals, not completions); without arrivals each row sees the earlier rows.
A live scheduler gets the same by calling `observe` when a request completes.

0 means "unknown / no such request". `LengthHistory` is the state (what the runtime keeps and
`observe` updates, one request at a time); `history_codes` is the vectorized form over a frame
(same numbers: tests/test_output_length.py checks both against each other). Pure Python on
the runtime path (numpy / polars only in the save / load and vectorized helpers).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from servecast.predictors.output_length.buckets import log_bucket

HISTORY = ["same_last_b", "same_last2_b", "same_n_b", "same_mean_b", "same_gap_b",
           "near_last_b", "near_med_b", "recent_med_b"]
NEAR_WIDTH = 16  # tokens per "similar length" bucket
NEAR_KEEP = 5  # outputs kept per length bucket
RECENT_KEEP, RECENT_MIN = 50, 5  # outputs of any request kept / needed for the median
TTFT_S, DECODE_S_PER_TOKEN = 0.5, 0.03  # assumed finish: first token, then ~33 tokens/s
FILE = "history.npz"
_NAN = float("nan")


def _median(values) -> float:
    s = sorted(values)
    k = len(s)
    return float(s[k // 2]) if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2.0


def _same_code(st: list[float]) -> tuple[int, int, int, int]:
    """Codes of one prompt length's state [last, second-last, count, sum, arrival]."""
    return log_bucket(st[0]), log_bucket(st[1]), log_bucket(st[2]), log_bucket(st[3] / st[2])


def _near_code(q: deque) -> tuple[int, int]:
    """Codes of a length bucket's latest outputs: the last one and their median."""
    return log_bucket(q[-1]), log_bucket(_median(q))


def _recent_code(recent: deque) -> int:
    """Code of the median of the latest outputs (0 until RECENT_MIN are known)."""
    return log_bucket(_median(recent)) if len(recent) >= RECENT_MIN else 0


class LengthHistory:
    """Prompt-length history of observed requests (see module docstring).

    same[prompt] = [last, second-last (NaN), count, sum of outputs, arrival of last (NaN)],
    near[prompt // NEAR_WIDTH] = deque of its last NEAR_KEEP outputs, recent = deque of the
    last RECENT_KEEP outputs. Codes are cached per key so `codes` is a few dict lookups.
    """

    def __init__(self) -> None:
        self.same: dict[float, list[float]] = {}
        self.near: dict[int, deque] = {}
        self.recent: deque = deque(maxlen=RECENT_KEEP)
        self._same_codes: dict[float, tuple[int, int, int, int]] = {}
        self._near_codes: dict[int, tuple[int, int]] = {}
        self._recent_code = 0

    def codes(self, prompt_tokens: float, arrival_s: float | None = None) -> tuple:
        """The 8 history codes (order of HISTORY) of a request about to be scheduled."""
        p = float(prompt_tokens)
        s = self._same_codes.get(p)
        if s is None:
            same = (0, 0, 1, 0, 0)
        else:
            t_last = self.same[p][4]
            gap = (0 if arrival_s is None or t_last != t_last or arrival_s != arrival_s
                   else log_bucket(arrival_s - t_last))
            same = (*s, gap)
        near = self._near_codes.get(int(p) // NEAR_WIDTH, (0, 0))
        return (same[0], same[1], same[2], same[3], same[4], near[0], near[1],
                self._recent_code)

    def observe(self, prompt_tokens: float, output_tokens: float,
                arrival_s: float | None = None) -> None:
        """Record a completed request (its prompt and output tokens, its arrival in seconds)."""
        p, y = float(prompt_tokens), float(output_tokens)
        t = _NAN if arrival_s is None else float(arrival_s)
        st = self.same.get(p)
        st = [y, _NAN, 1.0, y, t] if st is None else [y, st[0], st[2] + 1, st[3] + y, t]
        self.same[p] = st
        self._same_codes[p] = _same_code(st)
        b = int(p) // NEAR_WIDTH
        q = self.near.get(b)
        if q is None:
            q = self.near[b] = deque(maxlen=NEAR_KEEP)
        q.append(y)
        self._near_codes[b] = _near_code(q)
        self.recent.append(y)
        self._recent_code = _recent_code(self.recent)

    # -- persistence -----------------------------------------------------------------------
    def arrays(self) -> dict:
        """numpy arrays of the state (what `save` writes)."""
        import numpy as np

        near_keys = sorted(self.near)
        near = np.full((len(near_keys), NEAR_KEEP), np.nan)
        for i, k in enumerate(near_keys):
            q = self.near[k]
            near[i, NEAR_KEEP - len(q):] = list(q)  # oldest first, right-aligned
        same_keys = sorted(self.same)
        return {"same_keys": np.array(same_keys, dtype=np.float64),
                "same_vals": np.array([self.same[k] for k in same_keys],
                                      dtype=np.float64).reshape(-1, 5),
                "near_keys": np.array(near_keys, dtype=np.int64),
                "near_vals": near, "recent": np.array(list(self.recent), dtype=np.float64)}

    @classmethod
    def from_arrays(cls, a: dict) -> LengthHistory:
        h = cls()
        for k, v in zip(a["same_keys"].tolist(), a["same_vals"].tolist(), strict=True):
            h.same[k] = v
            h._same_codes[k] = _same_code(v)
        for k, row in zip(a["near_keys"].tolist(), a["near_vals"].tolist(), strict=True):
            q = h.near[k] = deque((x for x in row if x == x), maxlen=NEAR_KEEP)
            h._near_codes[k] = _near_code(q)
        h.recent.extend(a["recent"].tolist())
        h._recent_code = _recent_code(h.recent)
        return h

    def save(self, path: Path) -> None:
        import numpy as np

        np.savez_compressed(Path(path) / FILE, **self.arrays())

    @classmethod
    def load(cls, path: Path) -> LengthHistory:
        import numpy as np

        with np.load(Path(path) / FILE) as z:
            return cls.from_arrays({k: z[k] for k in z.files})

    def copy(self) -> LengthHistory:
        return LengthHistory.from_arrays(self.arrays())


def finish_s(arrival, output):
    """Estimated finish time (s) of requests that arrived at `arrival` (s) and produced
    `output` tokens (numpy arrays)."""
    return arrival + TTFT_S + DECODE_S_PER_TOKEN * output


def visibility_positions(arrival, output):
    """(query position of each row, position from which its output is visible): arrival and
    `finish_s` where every arrival is known, else the row index for both (earlier rows)."""
    import numpy as np

    if len(arrival) and np.isfinite(arrival).all():
        return arrival, finish_s(arrival, output)
    pos = np.arange(len(arrival), dtype=np.float64)
    return pos, pos


class _Timeline:
    """Where each row of a frame asks and when its output becomes known, on one axis
    (`visibility_positions`), and the as-of join that answers "the latest state row visible
    before this row arrives". State rows from before the frame get positions before
    everything (`before`)."""

    def __init__(self, arrival, output):
        import numpy as np
        import polars as pl

        self.qpos, vis = visibility_positions(arrival, output)
        fr = np.flatnonzero(~np.isnan(output))
        #: the observed rows in the order they become known, and their positions
        self.observed = fr[np.argsort(vis[fr], kind="stable")]
        self.vis = vis[self.observed]
        self.start = min(self.qpos.min(initial=0.0), self.vis.min(initial=0.0)) - 1.0
        self.order = np.argsort(self.qpos, kind="stable")  # rows by arrival position
        self.back = pl.Series(np.argsort(self.order))

    def positions(self, k: int):
        """Positions of k state pseudo-rows (before everything), then the observed rows."""
        import numpy as np

        return np.r_[self.start - k + np.arange(k, dtype=np.float64), self.vis]

    def asof(self, right, by):
        """Per row (in row order): the latest `right` row visible before it arrives (matched
        on `key` = `by` of the row when `by` is given)."""
        import polars as pl

        left = pl.DataFrame({"i": self.qpos[self.order],
                             **({} if by is None else {"key": by[self.order]})})
        got = left.join_asof(right, on="i", by=None if by is None else "key",
                             strategy="backward", allow_exact_matches=False,
                             check_sortedness=False)
        return got[self.back]


def _same_prompt(tl: _Timeline, st: dict, prompt, output, arrival):
    """Codes of the requests with the same prompt length (last, second last, count, mean
    output, seconds since the last) and the per-key state rows they came from."""
    import numpy as np
    import polars as pl

    from servecast.predictors.output_length.buckets import log_buckets

    k0, v0 = st["same_keys"], st["same_vals"]
    fr = tl.observed
    # pseudo-rows carrying the state before the frame, then the frame's observed rows:
    # `w` / `ws` are count / output-sum contributions, `prev` the output before the row
    same = pl.DataFrame({
        "i": tl.positions(len(k0)),
        "key": np.r_[k0, prompt[fr]],
        "out": np.r_[v0[:, 0], output[fr]],
        "prev0": np.r_[v0[:, 1], np.full(len(fr), np.nan)],
        "w": np.r_[v0[:, 2], np.ones(len(fr))],
        "ws": np.r_[v0[:, 3], output[fr]],
        "t": np.r_[v0[:, 4], arrival[fr]],
        "pseudo": np.r_[np.ones(len(k0), bool), np.zeros(len(fr), bool)],
    }).with_columns(pl.col("prev0").fill_nan(None))
    same = same.with_columns(
        pl.when(pl.col("pseudo")).then(pl.col("prev0"))
        .otherwise(pl.col("out").shift(1).over("key")).alias("prev"),
        pl.col("w").cum_sum().over("key").alias("cnt"),
        pl.col("ws").cum_sum().over("key").alias("sum"),
    )
    got = tl.asof(same.select("i", "key", "out", "prev", "cnt", "sum", "t"), prompt)
    got = got.with_columns(pl.Series("now", arrival))
    last = got["out"].fill_null(np.nan).to_numpy()
    cnt = got["cnt"].fill_null(0.0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, got["sum"].fill_null(0.0).to_numpy() / np.maximum(cnt, 1),
                        np.nan)
    gap = (got["now"] - got["t"]).fill_nan(None).fill_null(np.nan).to_numpy()
    codes = {"same_last_b": log_buckets(last), "same_last2_b":
             log_buckets(got["prev"].fill_null(np.nan).to_numpy()),
             "same_n_b": log_buckets(cnt), "same_mean_b": log_buckets(mean),
             "same_gap_b": log_buckets(gap)}
    return codes, same


def _near_length(tl: _Timeline, st: dict, prompt, output):
    """Codes of the requests with a similar prompt length (the bucket's last output and the
    median of its last NEAR_KEEP) and the state rows (state right-aligned, then the frame)."""
    import numpy as np
    import polars as pl

    from servecast.predictors.output_length.buckets import log_buckets

    nk, nv = st["near_keys"], st["near_vals"]
    pk, pv = np.repeat(nk, NEAR_KEEP), nv.reshape(-1)
    keep = ~np.isnan(pv)
    bucket = np.floor(prompt).astype(np.int64) // NEAR_WIDTH
    near = pl.DataFrame({"i": tl.positions(int(keep.sum())),
                         "key": np.r_[pk[keep], bucket[tl.observed]],
                         "out": np.r_[pv[keep], output[tl.observed]]})
    near = near.with_columns(
        pl.col("out").rolling_median(NEAR_KEEP, min_samples=1).over("key").alias("med"))
    got = tl.asof(near, bucket)
    codes = {"near_last_b": log_buckets(got["out"].fill_null(np.nan).to_numpy()),
             "near_med_b": log_buckets(got["med"].fill_null(np.nan).to_numpy())}
    return codes, near


def _recent(tl: _Timeline, st: dict, output):
    """Code of any request: the rolling median of the last RECENT_KEEP outputs, and the
    state rows."""
    import numpy as np
    import polars as pl

    from servecast.predictors.output_length.buckets import log_buckets

    r0 = st["recent"]
    rec = pl.DataFrame({"i": tl.positions(len(r0)), "out": np.r_[r0, output[tl.observed]]})
    rec = rec.with_columns(pl.col("out").rolling_median(RECENT_KEEP, min_samples=RECENT_MIN)
                           .alias("med"))
    got = tl.asof(rec, None)
    return {"recent_med_b": log_buckets(got["med"].fill_null(np.nan).to_numpy())}, rec


def _state_after(same, near, rec) -> LengthHistory:
    """The history after the frame's state rows: what `observe` row by row gives."""
    import numpy as np
    import polars as pl

    last = same.group_by("key", maintain_order=True).last().sort("key")
    tail = near.group_by("key", maintain_order=True).tail(NEAR_KEEP)
    tail = tail.with_columns(pl.int_range(pl.len()).over("key").alias("k"),
                             pl.len().over("key").alias("m"))
    keys = tail["key"].unique(maintain_order=False).sort()
    vals = np.full((len(keys), NEAR_KEEP), np.nan)
    row = np.searchsorted(keys.to_numpy(), tail["key"].to_numpy())
    vals[row, (NEAR_KEEP - tail["m"] + tail["k"]).to_numpy()] = tail["out"].to_numpy()
    return LengthHistory.from_arrays({
        "same_keys": last["key"].to_numpy(),
        "same_vals": np.column_stack([
            last[c].cast(pl.Float64).fill_null(np.nan).fill_nan(np.nan).to_numpy()
            for c in ("out", "prev", "cnt", "sum", "t")]),
        "near_keys": keys.to_numpy(), "near_vals": vals,
        "recent": rec["out"].tail(RECENT_KEEP).to_numpy()})


def history_codes(prompt, output, arrival, hist: LengthHistory, learn: bool = False) -> dict:
    """Vectorized history codes of a frame's rows (numpy arrays `prompt`, `output` (NaN = not
    observed), `arrival` (NaN = unknown)) after the requests in `hist`: each row sees the
    outputs visible when it arrives (module docstring).

    Returns {name: float64 array} for HISTORY. With `learn`, the observed rows are added to
    `hist` (as `observe` would, in the order they become visible).

    Steps: place the rows on one timeline (`_Timeline`), then the same-prompt, near-length
    and recent codes, each an as-of join of the rows on state rows (`hist` before the
    frame, then the frame's observed rows), then with `learn` the state after the frame.
    """
    import numpy as np

    prompt = np.asarray(prompt, np.float64)
    output = np.asarray(output, np.float64)
    arrival = np.asarray(arrival, np.float64)
    st = hist.arrays()
    tl = _Timeline(arrival, output)
    same_codes, same = _same_prompt(tl, st, prompt, output, arrival)
    near_codes, near = _near_length(tl, st, prompt, output)
    recent_codes, rec = _recent(tl, st, output)
    if learn and len(tl.observed):
        hist.__dict__.update(_state_after(same, near, rec).__dict__)
    out = {**same_codes, **near_codes, **recent_codes}
    return {k: v.astype(np.float64) for k, v in out.items()}
