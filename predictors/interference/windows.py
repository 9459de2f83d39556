"""Metric windows as dense arrays with numpy alone (the runtime path; no polars).

The same rules as `frames.tensorize` (which the predictor uses on polars frames): steps are
the distinct `t` of a window's finite values of known metrics, right-aligned, the last
`max_steps` kept; several values of one cell are averaged; values are robust z-scores
clipped to +-CLIP; absent and NaN/inf cells are masked. `window_stats` and `target_history`
are the baselines' window features.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from servecast.errors import InvalidInputError

CLIP = 8.0  # robust z-scores are clipped to +-CLIP (frames.CLIP)
METRIC_COLUMNS = ("window_id", "t", "metric", "value")


def long_columns(frame) -> dict[str, np.ndarray]:
    """Columns window_id, t, metric, value of a long frame (polars, pandas or a dict of
    sequences) as numpy arrays; InvalidInputError names what is missing or malformed."""
    try:
        have = list(frame.keys()) if isinstance(frame, Mapping) else list(frame.columns)
    except AttributeError:
        raise InvalidInputError(f"metrics: not a frame ({type(frame).__name__}); pass a long "
                                f"frame with columns {', '.join(METRIC_COLUMNS)}") from None
    missing = [c for c in METRIC_COLUMNS if c not in have]
    if missing:
        raise InvalidInputError(
            f"metrics: missing column(s) {', '.join(missing)} (has {', '.join(map(str, have))});"
            f" expected long format {', '.join(METRIC_COLUMNS)}")
    cols = {c: np.asarray(frame[c]) for c in METRIC_COLUMNS}
    if len(cols["t"]) == 0:
        raise InvalidInputError("metrics: no rows; each window needs at least one observation")
    try:
        cols["t"] = cols["t"].astype(np.float64)
        cols["value"] = np.array([np.nan if v is None else v for v in cols["value"]]
                                 if cols["value"].dtype == object else cols["value"],
                                 dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"metrics: t and value must be numeric, metric text ({e})") \
            from None
    bad = ~np.isfinite(cols["t"]) | _null(cols["window_id"]) | _null(cols["metric"])
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidInputError(
            f"metrics: {int(bad.sum())} row(s) with a missing window_id/metric or a non-finite "
            f"t (first: row {i}); drop them or fill t")
    cols["metric"] = cols["metric"].astype(str)
    return cols


def _null(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        return np.array([v is None or (isinstance(v, float) and v != v) for v in a], bool)
    return np.isnan(a) if a.dtype.kind == "f" else np.zeros(len(a), bool)


def window_columns(window) -> dict[str, np.ndarray]:
    """One window as long columns (window_id 0). A mapping metric -> sequence of values
    (equally spaced steps, aligned at the end) or metric -> number (one step); else a long
    frame whose `window_id` column, if any, holds one id."""
    if isinstance(window, Mapping) and "metric" not in window:
        if not window:
            raise InvalidInputError("metrics window: no metrics; give at least one")
        t, metric, value = [], [], []
        for name, vals in window.items():
            seq = np.atleast_1d(np.asarray(vals, dtype=np.float64))
            t += range(-len(seq) + 1, 1)
            metric += [str(name)] * len(seq)
            value += seq.tolist()
        n = len(t)
        return long_columns({"window_id": np.zeros(n, np.int64), "t": np.asarray(t, float),
                             "metric": np.asarray(metric), "value": np.asarray(value)})
    have = list(window.keys()) if isinstance(window, Mapping) else list(window.columns)
    if "window_id" in have:
        if len(set(np.asarray(window["window_id"]).tolist())) > 1:
            raise InvalidInputError("metrics window: several window_ids; use "
                                    "interference_batch for many windows")
    n = len(np.asarray(window["t"])) if "t" in have else 0
    cols = {c: window[c] for c in METRIC_COLUMNS[1:] if c in have}
    return long_columns({"window_id": np.zeros(n, np.int64), **cols})


def window_index(wid: np.ndarray) -> tuple[list, np.ndarray]:
    """(ids in order of first appearance, each row's position in that list)."""
    keys = wid.astype(str) if wid.dtype == object else wid
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), np.intp)
    rank[order] = np.arange(len(order))
    return [wid[first[j]].item() if hasattr(wid[first[j]], "item") else wid[first[j]]
            for j in order], rank[inv.ravel()]


def tensorize(cols: dict[str, np.ndarray], metrics: list[str], center: np.ndarray,
              scale: np.ndarray, max_steps: int) -> tuple[list, np.ndarray, np.ndarray]:
    """(ids, values [N, max_steps, M] float32, mask [N, max_steps, M]) of long columns, the
    windows in order of first appearance. InvalidInputError for a window with no finite
    value of a known metric."""
    ids, w = window_index(cols["window_id"])
    index = {m: i for i, m in enumerate(metrics)}
    k = np.array([index.get(m, -1) for m in cols["metric"]], dtype=np.intp)
    keep = (k >= 0) & np.isfinite(cols["value"])
    w, k, t, v = w[keep], k[keep], cols["t"][keep], cols["value"][keep]
    order = np.lexsort((-t, w))  # per window, latest step first
    w, k, t, v = w[order], k[order], t[order], v[order]
    new_w = np.r_[True, w[1:] != w[:-1]] if len(w) else np.zeros(0, bool)
    new_t = new_w | np.r_[True, t[1:] != t[:-1]] if len(w) else new_w
    c = np.cumsum(new_t)
    back = c - np.maximum.accumulate(np.where(new_w, c, 0)) + 1  # dense rank from the end
    sel = back <= max_steps
    n, m = len(ids), len(metrics)
    total = np.zeros((n, max_steps, m))
    count = np.zeros((n, max_steps, m))
    cell = (w[sel], max_steps - back[sel], k[sel])
    np.add.at(total, cell, v[sel])
    np.add.at(count, cell, 1.0)
    mask = count > 0
    kk = np.broadcast_to(np.arange(m), mask.shape)[mask]
    values = np.zeros((n, max_steps, m), dtype=np.float32)
    values[mask] = np.clip((total[mask] / count[mask] - center[kk]) / scale[kk], -CLIP, CLIP)
    empty = np.flatnonzero(~mask.any(axis=(1, 2)))
    if empty.size:
        raise InvalidInputError(
            f"metrics: {empty.size} window(s) have no finite value of a known metric "
            f"(first: window_id {ids[int(empty[0])]!r}); the model was trained on metrics "
            f"{', '.join(metrics[:8])}{'...' if m > 8 else ''}")
    return ids, values, mask


def window_stats(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per metric: last observed, mean, std, min, max, slope per step and count -> [N, 7M].

    Statistics of a metric never observed in the window are NaN (LightGBM handles them).
    """
    n, t, m = values.shape
    w = mask.astype(np.float64)
    cnt = w.sum(1)
    seen = cnt > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(seen, (values * w).sum(1) / cnt, np.nan)
        var = np.where(seen, (w * (values - np.nan_to_num(mean)[:, None]) ** 2).sum(1) / cnt,
                       np.nan)
        vmin = np.where(seen, np.where(mask, values, np.inf).min(1), np.nan)
        vmax = np.where(seen, np.where(mask, values, -np.inf).max(1), np.nan)
        last_idx = t - 1 - np.argmax(mask[:, ::-1, :], axis=1)
        last = np.where(seen, np.take_along_axis(values, last_idx[:, None, :], 1)[:, 0], np.nan)
        steps = np.arange(t, dtype=np.float64)[None, :, None]
        ts = (steps * w).sum(1) / np.maximum(cnt, 1)
        cov = (w * (steps - ts[:, None]) * (values - np.nan_to_num(mean)[:, None])).sum(1)
        sxx = (w * (steps - ts[:, None]) ** 2).sum(1)
        slope = np.where(sxx > 0, cov / np.where(sxx > 0, sxx, 1), np.nan)
    feats = [last, mean, np.sqrt(var), vmin, vmax, slope, cnt]
    return np.concatenate(feats, axis=1).astype(np.float32)


def target_history(cols: dict[str, np.ndarray], n_windows: int, w: np.ndarray, target: str,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """(last, mean of the last `k`) finite values of metric `target` per window (windows by
    position `w` of each row, as `window_index` gives); NaN where a window lacks it."""
    keep = (cols["metric"] == target) & np.isfinite(cols["value"])
    ww, tt, vv = w[keep], cols["t"][keep], cols["value"][keep]
    order = np.lexsort((tt, ww))  # stable: ties keep input order, as a stable sort would
    ww, vv = ww[order], vv[order]
    last = np.full(n_windows, np.nan)
    ma = np.full(n_windows, np.nan)
    for j in np.unique(ww):
        vals = vv[ww == j]
        last[j], ma[j] = vals[-1], vals[-k:].mean()
    return last, ma
