"""Baselines kept as first-class models (same protocol, saved and served the same way).

- GlobalQuantiles: quantiles of all training outputs.
- SegmentQuantiles: quantiles per (model x log type), falling back to global.
- PromptBinQuantiles: per segment x prompt-token quantile bin (20 bins), falling back.
- SlidingWindow: quantiles of the last `history` observed outputs of the same segment
  (Past-Future style); prequential on frames that carry output_tokens: a row sees the
  outputs that had finished when it arrived (history.finish_s; earlier rows without arrivals).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from servecast.predictors.output_length.core import OutputLengthModel
from servecast.predictors.output_length.features import visibility
from servecast.predictors.output_length.table import LengthTable

LEVELS = [0.5, 0.9, 0.99]
BASE_COLUMNS = ["prompt_tokens", "model", "log_type"]


def _stats(y: np.ndarray) -> list[float]:
    """(p50, p90, p99, mean) of outputs `y` (tokens)."""
    return [*np.quantile(y, LEVELS).tolist(), float(np.mean(y))]


class BinnedQuantiles(OutputLengthModel):
    """Empirical quantiles per cell (segment x prompt bin); cells under `min_rows` fall back."""

    name = "binned"
    by_segment, default_bins = True, 20

    def __init__(self, bins: int | None = None, min_rows: int = 20, **kw):
        super().__init__(**kw)
        self.bins = self.default_bins if bins is None else bins
        self.min_rows = min_rows
        self._table: LengthTable | None = None


    def _codes(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = self.encoder.transform(df)
        return X[:, 1].astype(np.intp), X[:, 2].astype(np.intp), X[:, 0]

    def _fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> None:
        self.encoder.columns = list(BASE_COLUMNS)
        m, lg, p = self._codes(train)
        y = train["output_tokens"].to_numpy().astype(np.float64)
        qs = np.linspace(0, 1, self.bins + 1)[1:-1]
        edges = np.unique(np.quantile(p, qs)) if self.bins > 1 else np.array([])
        cats = self.encoder.categories
        M, L = len(cats["model"]) + 1, len(cats["log_type"]) + 1
        P = len(edges) + 1
        values = np.zeros((1, M, L, P, 4), dtype=np.float32)
        glob = _stats(y)
        pbin = np.searchsorted(edges, p, side="left")
        for mi in range(M):
            for li in range(L):
                seg = (m == mi) & (lg == li) if self.by_segment else np.ones(len(y), bool)
                seg_stats = _stats(y[seg]) if seg.sum() >= self.min_rows else glob
                for pi in range(P):
                    cell = seg & (pbin == pi)
                    values[0, mi, li, pi] = (_stats(y[cell]) if cell.sum() >= self.min_rows
                                             else seg_stats)
        self._table = LengthTable(edges, [(0, 0, 0)], values)

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        m, lg, p = self._codes(df)
        return self._table.lookup(np.zeros(len(p), np.intp), m, lg, p).astype(np.float64)

    def table(self) -> LengthTable:
        return self._table

    def _load_weights(self, path: Path, card: dict) -> None:
        self._table = LengthTable.load(path)


class GlobalQuantiles(BinnedQuantiles):
    name = "global"
    by_segment, default_bins = False, 1


class SegmentQuantiles(BinnedQuantiles):
    name = "segment"
    by_segment, default_bins = True, 1


class PromptBinQuantiles(BinnedQuantiles):
    name = "prompt_bins"
    by_segment, default_bins = True, 20


class SlidingWindow(OutputLengthModel):
    """Quantiles of the last `history` observed outputs per segment (Past-Future style)."""

    name = "sliding_window"

    def __init__(self, history: int = 1000, **kw):
        kw.setdefault("calib_frac", 0.0)
        super().__init__(**kw)
        self.history = history
        self.recent: dict[str, list[float]] = {}  # segment key -> last `history` outputs


    def _segments(self, df: pl.DataFrame) -> pl.Series:
        X = self.encoder.transform(df)
        return pl.Series([f"{int(a)}:{int(b)}" for a, b in X[:, 1:3]], dtype=pl.Utf8)

    def _fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> None:
        self.encoder.columns = list(BASE_COLUMNS)
        self.recent = {}
        self._push(self._segments(train), train["output_tokens"].to_numpy())

    def _push(self, segs: pl.Series, y: np.ndarray) -> None:
        for s, v in zip(segs.to_list(), y.tolist(), strict=True):
            self.recent.setdefault(s, []).append(float(v))
        for s in self.recent:
            self.recent[s] = self.recent[s][-self.history:]

    def _snapshot(self, seg: str) -> list[float]:
        pool = self.recent.get(seg) or [v for r in self.recent.values() for v in r]
        return _stats(np.array(pool))

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        segs = self._segments(df)
        if "output_tokens" not in df.columns or df["output_tokens"].null_count():
            return np.array([self._snapshot(s) for s in segs.to_list()])
        # prequential: each row sees the window of the outputs known when it asks (training
        # tail, then the frame's rows in finishing order)
        ask, known = visibility(df)
        hist_s = [s for s, r in self.recent.items() for _ in r]
        hist_y = [v for r in self.recent.values() for v in r]
        events = pl.DataFrame({
            "seg": hist_s + segs.to_list(),
            "y": hist_y + df["output_tokens"].cast(pl.Float64).to_list(),
            "known": np.concatenate([np.full(len(hist_y), -np.inf), known]),
        }).with_row_index("order").sort(["seg", "known", "order"])
        w = dict(window_size=self.history, min_samples=1)
        y = pl.col("y")
        windows = events.with_columns(
            *[y.rolling_quantile(q, "linear", **w).over("seg").alias(f"q{i}")
              for i, q in enumerate(LEVELS)],
            y.rolling_mean(**w).over("seg").alias("q3"))
        # the last event of the row's segment known strictly before it asks
        windows = windows.unique(["seg", "known"], keep="last", maintain_order=True)
        queries = pl.DataFrame({"seg": segs, "ask": ask}).with_row_index("row")
        out = (queries.sort("ask")
               .join_asof(windows.sort("known"), left_on="ask", right_on="known", by="seg",
                          strategy="backward", allow_exact_matches=False,
                          check_sortedness=False)  # both sorted on the key just above
               .sort("row").select("q0", "q1", "q2", "q3").to_numpy().astype(np.float64))
        glob = _stats(np.array(hist_y)) if hist_y else [0.0] * 4
        return np.where(np.isnan(out), np.array(glob), out)

    def update(self, observed) -> SlidingWindow:
        super().update(observed)
        from servecast.predictors.output_length.core import completed
        from servecast.predictors.output_length.features import check_requests

        df = completed(check_requests(observed, need_output=True))
        self._push(self._segments(df), df["output_tokens"].to_numpy())
        return self

    def table(self) -> LengthTable:
        cats = self.encoder.categories
        M, L = len(cats["model"]) + 1, len(cats["log_type"]) + 1
        values = np.zeros((1, M, L, 1, 4), dtype=np.float32)
        for mi in range(M):
            for li in range(L):
                values[0, mi, li, 0] = self._snapshot(f"{mi}:{li}")
        return LengthTable(np.array([]), [(0, 0, 0)], values)

    def _save_weights(self, path: Path) -> None:
        (path / "recent.json").write_text(json.dumps(self.recent))

    def _load_weights(self, path: Path, card: dict) -> None:
        self.recent = json.loads((path / "recent.json").read_text())


class TfidfRidge(OutputLengthModel):
    """TF-IDF + ridge over the prompt text, its length and the previous turn's output
    (tfidf.py) on log1p(tokens): the text baseline. p50 is the ridge's prediction shifted by
    the median training residual, p90 / p99 by those residual quantiles (then conformal, like
    every model); the mean is exp(prediction + residual variance / 2) - 1. Evaluated beside
    the text model, not served (the runtime reads table, forest and text models)."""

    name = "tfidf_ridge"
    table_capable = False

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ridge = None
        self.offsets = np.zeros(4)

    def _inputs(self, df: pl.DataFrame) -> tuple[list[str], np.ndarray]:
        from servecast.predictors.output_length.conversation import memory_features
        from servecast.predictors.output_length.tfidf import numeric

        if "prompt_text" not in df.columns or df["prompt_text"].null_count():
            from servecast.errors import InvalidInputError

            raise InvalidInputError("the tfidf_ridge baseline needs prompt_text on every row")
        prev = memory_features(df, np.zeros((df.height, 1)))[:, 0]  # the previous turn's
        return df["prompt_text"].to_list(), numeric(df["prompt_tokens"].to_numpy(), prev)

    def _fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> None:
        from servecast.predictors.output_length.tfidf import TextRidge

        texts, num = self._inputs(train)
        ly = np.log1p(train["output_tokens"].to_numpy().astype(np.float64))
        self.ridge = TextRidge().fit(texts, num, ly)
        r = ly - self.ridge.predict(texts, num)
        self.offsets = np.array([*np.quantile(r, LEVELS), np.log(np.mean(np.exp(r)))])

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        texts, num = self._inputs(df)
        return np.expm1(self.ridge.predict(texts, num)[:, None] + self.offsets).clip(0)


class PreviousTurn(OutputLengthModel):
    """The previous turn's output of the same conversation as p50 (its p90 / p99 / mean scaled
    by the training quantiles of output / previous output); first turns and requests without
    a session get the global quantiles. Evaluated beside the text model, not served."""

    name = "previous_turn"
    table_capable = False

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ratios = np.ones(4)
        self.glob = np.zeros(4)

    @staticmethod
    def _previous(df: pl.DataFrame) -> np.ndarray:
        from servecast.predictors.output_length.conversation import memory_features

        return np.expm1(memory_features(df, np.zeros((df.height, 1)))[:, 0])  # NaN: none

    def _fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> None:
        y = train["output_tokens"].to_numpy().astype(np.float64)
        prev = self._previous(train)
        has = np.isfinite(prev)
        self.glob = np.array(_stats(y))
        if has.any():
            ratio = (1.0 + y[has]) / (1.0 + prev[has])
            self.ratios = np.array([*np.quantile(ratio, LEVELS), float(np.mean(ratio))])
            self.ratios[0] = 1.0  # p50 is the previous output itself

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        prev = self._previous(df)
        out = np.tile(self.glob, (df.height, 1))
        has = np.isfinite(prev)
        out[has] = (1.0 + prev[has, None]) * self.ratios - 1.0
        return out.clip(0)
