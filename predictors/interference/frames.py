"""Long-format metric windows -> padded tensors, with validation and masking.

A *metrics* frame has one row per observation: `window_id` (int or str), `t` (number; only
the order within a window matters: steps are the distinct `t` values, the last `max_steps`
kept), `metric` (str, any name) and `value` (float). Windows may differ in length and in
which metrics they carry: an absent (window, step, metric) cell is masked, never imputed.
NaN/inf values are masked the same way (documented masking); several values of one cell
are averaged. A *labels* frame has `window_id, perf` with perf in (0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.frames import to_polars
from servecast.predictors.interference.windows import CLIP

METRIC_COLUMNS = ("window_id", "t", "metric", "value")
LABEL_COLUMNS = ("window_id", "perf")


def _frame(obj, columns: tuple[str, ...], what: str) -> pl.DataFrame:
    """Accept a polars/pandas frame (or dict of columns); check the columns are there."""
    df = to_polars(obj, f"{what} (columns {', '.join(columns)})")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InvalidInputError(
            f"{what}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)}); "
            f"expected long format {', '.join(columns)}")
    return df.select(columns)


def clean_metrics(metrics) -> pl.DataFrame:
    """Validated metrics frame: window_id kept as given, t and value Float64, metric Utf8.

    NaN/inf values become nulls (masked); rows with a null/NaN `t`, window_id or metric
    raise InvalidInputError. An empty frame raises too.
    """
    df = _frame(metrics, METRIC_COLUMNS, "metrics")
    if df.height == 0:
        raise InvalidInputError("metrics: no rows; each window needs at least one observation")
    try:
        df = df.with_columns(pl.col("t").cast(pl.Float64), pl.col("value").cast(pl.Float64),
                             pl.col("metric").cast(pl.Categorical))
    except pl.exceptions.PolarsError as e:
        raise InvalidInputError(f"metrics: t and value must be numeric, metric text ({e})") \
            from None
    bad = df.filter(pl.col("window_id").is_null() | pl.col("metric").is_null()
                    | pl.col("t").is_null() | ~pl.col("t").is_finite())
    if bad.height:
        raise InvalidInputError(
            f"metrics: {bad.height} row(s) with a missing window_id/metric or a non-finite t "
            f"(first: {bad.row(0, named=True)}); drop them or fill t")
    return df.with_columns(
        pl.when(pl.col("value").is_finite()).then(pl.col("value")).otherwise(None)
        .alias("value"))


def clean_labels(labels, windows: pl.Series | None = None) -> pl.DataFrame:
    """Validated labels: perf finite in (0, 1], one per window, every window_id known."""
    df = _frame(labels, LABEL_COLUMNS, "labels")
    df = df.with_columns(pl.col("perf").cast(pl.Float64, strict=False))
    bad = df.filter(pl.col("perf").is_null() | ~pl.col("perf").is_finite()
                    | (pl.col("perf") <= 0) | (pl.col("perf") > 1))
    if bad.height:
        raise InvalidInputError(
            f"labels: {bad.height} perf value(s) outside (0, 1] or not finite "
            f"(first: {bad.row(0, named=True)}); perf = measured / ideal performance, "
            "direction-normalized, 1 = no degradation")
    dup = df.filter(pl.col("window_id").is_duplicated())
    if dup.height:
        raise InvalidInputError(f"labels: window_id {dup['window_id'][0]!r} has more than one "
                                "label; give one perf per window")
    if windows is not None:
        unknown = df.filter(~pl.col("window_id").is_in(windows.implode()))
        if unknown.height:
            raise InvalidInputError(
                f"labels: {unknown.height} window_id(s) not in metrics (first: "
                f"{unknown['window_id'][0]!r}); every labelled window needs metric rows")
        unlabelled = windows.filter(~windows.is_in(df["window_id"].implode()))
        if unlabelled.len():
            raise InvalidInputError(
                f"metrics: {unlabelled.len()} window(s) without a label (first: "
                f"{unlabelled[0]!r}); label them or drop their rows")
    return df


@dataclass
class Normalizer:
    """Per-metric robust scaling learned on the training set: z = (v - center) / scale."""

    metrics: list[str]
    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, df: pl.DataFrame) -> Normalizer:
        stats = (df.drop_nulls("value").group_by("metric")
                 .agg(pl.col("value").median().alias("c"),
                      (pl.col("value").quantile(0.75) - pl.col("value").quantile(0.25))
                      .alias("iqr"),
                      pl.col("value").std().alias("sd"))
                 .sort(pl.col("metric").cast(pl.Utf8)))
        if stats.height == 0:
            raise InvalidInputError("metrics: every value is NaN/inf/null; nothing to learn")
        iqr = stats["iqr"].fill_null(0).to_numpy() / 1.349
        sd = stats["sd"].fill_null(0).to_numpy()
        c = stats["c"].to_numpy()
        scale = np.where(iqr > 0, iqr, np.where(sd > 0, sd, np.maximum(np.abs(c), 1.0)))
        return cls(stats["metric"].cast(pl.Utf8).to_list(), c.astype(np.float64),
                   scale.astype(np.float64))

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "center": self.center.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(list(d["metrics"]), np.asarray(d["center"]), np.asarray(d["scale"]))


@dataclass
class Windows:
    """Dense view of windows: values [N, T, M] (robust z, 0 where masked), mask [N, T, M]."""

    ids: list
    values: np.ndarray
    mask: np.ndarray
    unknown_metrics: list[str]


def tensorize(df: pl.DataFrame, norm: Normalizer, max_steps: int,
              ids: list | None = None) -> Windows:
    """Pivot a clean metrics frame into right-aligned [N, max_steps, M] arrays.

    Steps are the distinct `t` of each window in order, the last one at index T-1; windows
    longer than `max_steps` keep their last steps. Metrics unseen in training are ignored
    (listed in `unknown_metrics`). Raises InvalidInputError naming windows that end up with
    no observed value.
    """
    ids = ids if ids is not None else df["window_id"].unique(maintain_order=True).to_list()
    index = {m: i for i, m in enumerate(norm.metrics)}
    known = df.filter(pl.col("metric").is_in(norm.metrics))
    unknown = sorted(set(df["metric"].unique().to_list()) - set(index))
    wid = pl.DataFrame({"window_id": ids}, schema={"window_id": df.schema["window_id"]})
    wid = wid.with_row_index("w")
    cells = (known.drop_nulls("value")
             .with_columns(pl.col("t").rank("dense", descending=True).over("window_id")
                           .cast(pl.Int64).alias("back"))
             .filter(pl.col("back") <= max_steps)
             .group_by("window_id", "back", "metric").agg(pl.col("value").mean())
             .join(wid, on="window_id"))
    n, m = len(ids), len(norm.metrics)
    values = np.zeros((n, max_steps, m), dtype=np.float32)
    mask = np.zeros((n, max_steps, m), dtype=bool)
    if cells.height:
        w = cells["w"].to_numpy()
        s = max_steps - cells["back"].to_numpy()
        k = cells["metric"].cast(pl.Utf8).replace_strict(index, return_dtype=pl.Int64).to_numpy()
        v = (cells["value"].to_numpy() - norm.center[k]) / norm.scale[k]
        values[w, s, k] = np.clip(v, -CLIP, CLIP)
        mask[w, s, k] = True
    empty = np.flatnonzero(~mask.any(axis=(1, 2)))
    if empty.size:
        first = ids[int(empty[0])]
        raise InvalidInputError(
            f"metrics: {empty.size} window(s) have no finite value of a known metric "
            f"(first: window_id {first!r}); the model was trained on metrics "
            f"{', '.join(norm.metrics[:8])}{'...' if m > 8 else ''}")
    return Windows(ids, values, mask, unknown)
