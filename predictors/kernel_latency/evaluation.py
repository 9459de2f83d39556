"""Evaluation protocols: leave one GPU out (NeuSight's GPUs, or Vidur's with everything else
in training), and how far the measured behaviour of one GPU transfers to another
(`transfer_bounds`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from servecast.predictors.kernel_latency.frames import kernel_rows
from servecast.predictors.kernel_latency.ops import SHAPE_COLUMNS
from servecast.predictors.kernel_latency.physics import features
from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor
from servecast.predictors.kernel_latency.specs import SPEC_KEYS
from servecast.predictors.metrics import mdape


def gpu_groups(devices: Mapping[str, Mapping], names) -> np.ndarray:
    """A GPU-chip key per device name (same SM count, cores and fp32 peak = same chip, e.g.
    the A100 40GB and 80GB boards), so a held-out GPU leaks through no sibling board."""
    key = {n: "{Num_Sm}x{Core_Per_SM}@{SingleFLOPs}".format(**devices[n]) for n in set(names)}
    return np.array([key[n] for n in names])


def _summary(name: str, ops: np.ndarray, pred: np.ndarray, roof: np.ndarray,
             true: np.ndarray) -> list[dict]:
    out = []
    groups = {"all": np.ones(len(ops), bool)} | {op: ops == op for op in sorted(set(ops))}
    for g, m in groups.items():
        out.append({"held_out": name, "op": g, "rows": int(m.sum()),
                    "mdape": mdape(pred[m], true[m]), "roofline_mdape": mdape(roof[m], true[m])})
    return out


def leave_one_gpu_out(frame: pl.DataFrame, devices: Mapping[str, Mapping],
                      make: Callable[[Mapping[str, Mapping]], KernelLatencyPredictor],
                      log: Callable[[str], None] | None = None,
                      hold_out: Sequence[str] | None = None) -> pl.DataFrame:
    """Fit on all GPUs but one, predict the held-out GPU from its spec; repeat for each GPU
    chip in `frame`, or for the chips of the `hold_out` device names only (every board of a
    held-out chip leaves the training data, whichever source measured it).

    Returns rows [held_out, op ('all' or an op), rows, mdape, roofline_mdape] (MdAPE in %).
    """
    names = frame["device"].to_numpy()
    groups = gpu_groups(devices, names)
    chips = sorted(set(groups) if hold_out is None else set(gpu_groups(devices, hold_out)))
    rows = []
    for g in chips:
        test = groups == g
        held = ", ".join(sorted(set(names[test])))
        model = make(devices).fit(frame.filter(pl.Series(~test)))
        part = frame.filter(pl.Series(test))
        pred = model.predict(part)["latency_ms"].to_numpy()
        roof = model.predict_roofline(part, devices)
        res = _summary(held, part["op"].to_numpy(), pred, roof, part["latency_ms"].to_numpy())
        if log:
            log(f"held out {held}: MdAPE {res[0]['mdape']:.1f}% (roofline "
                f"{res[0]['roofline_mdape']:.1f}%); " + ", ".join(
                    f"{r['op']} {r['mdape']:.1f} ({r['roofline_mdape']:.1f})"
                    for r in res if r["op"] in ("bmm", "linear")))
        rows += res
    return pl.DataFrame(rows)


def nested_selection(frame: pl.DataFrame, devices: Mapping[str, Mapping],
                     make: Callable[..., KernelLatencyPredictor],
                     powers: Sequence[float], weights: Sequence[float],
                     ops: Sequence[str] = ("bmm", "linear"),
                     log: Callable[[str], None] | None = None,
                     epochs: Sequence[int] | None = None) -> pl.DataFrame:
    """Leave one GPU chip out with the settings chosen inside the other chips: for each
    held-out chip g, every power constant c (`physics.power_budget`), training length e
    (`epochs`; None: `make`'s own) and shape-view weight w is scored by an inner
    leave-one-chip-out over the chips but g (score: the mean over the inner held-out chips
    and `ops` of the MdAPE, %); g is then predicted with the best (c, e, w).
    `make(devices, view)` (or `make(devices, view, epochs=e)` when `epochs` is given) builds
    a one-view predictor; the views are fit apart and mixed in log space (what
    `shape_weight` does inside one model), so each (c, e, training set) costs two fits,
    shared by both chips it leaves out.

    Returns rows [held_out, power, epochs (0 when not chosen), shape_weight, inner (inner
    score), chosen (bool), op, mdape (of g itself)] for every setting, so the plain
    leave-one-out table of each setting is there too.
    """
    from itertools import combinations

    from servecast.predictors.kernel_latency.physics import power_budget

    names = frame["device"].to_numpy()
    groups = gpu_groups(devices, names)
    chips = sorted(set(groups))
    true, op_col = frame["latency_ms"].to_numpy(), frame["op"].to_numpy()
    lengths = [None] if epochs is None else list(epochs)
    logp: dict[tuple, dict[str, np.ndarray]] = {}
    for c in powers:
        with power_budget(c):
            for n in lengths:
                kw = {} if n is None else {"epochs": n}
                for out in [(g,) for g in chips] + list(combinations(chips, 2)):
                    test = np.isin(groups, out)
                    part = frame.filter(pl.Series(test))
                    logp[c, n, out] = {}
                    for view in ("shape", "spec"):
                        model = make(devices, view, **kw).fit(frame.filter(pl.Series(~test)))
                        p = np.full(len(true), np.nan)
                        p[test] = np.log(model.predict(part)["latency_ms"].to_numpy())
                        logp[c, n, out][view] = p
                    if log:
                        log(f"power {c:g}, epochs {n or 'default'}: fit without "
                            f"{' + '.join(out)}")

    def scores(setting, out, chip) -> dict[str, float]:
        c, n, w = setting
        p = logp[c, n, out]
        pred = np.exp(w * p["shape"] + (1 - w) * p["spec"])
        return {op: mdape(pred[m], true[m])
                for op in ops if (m := (groups == chip) & (op_col == op)).any()}

    rows = []
    for g in chips:
        inner = {(c, n, w): np.mean([np.mean(list(scores((c, n, w), tuple(sorted((g, h))),
                                                         h).values()))
                                     for h in chips if h != g])
                 for c in powers for n in lengths for w in weights}
        best = min(inner, key=inner.get)
        held = ", ".join(sorted(set(names[groups == g])))
        for (c, n, w), score in inner.items():
            for op, e in scores((c, n, w), (g,), g).items():
                rows.append({"held_out": held, "power": float(c), "epochs": int(n or 0),
                             "shape_weight": float(w), "inner": float(score),
                             "chosen": (c, n, w) == best, "op": op, "mdape": e})
        if log:
            log(f"held out {held}: chose power {best[0]:g}, epochs {best[1] or 'default'}, "
                f"shape weight {best[2]:g}")
    return pl.DataFrame(rows)


def logo_table(results: pl.DataFrame) -> pl.DataFrame:
    """Mean over held-out GPUs of the per-op MdAPE (%), model vs roofline."""
    return (results.group_by("op").agg(pl.col("mdape").mean(), pl.col("roofline_mdape").mean(),
                                       pl.col("held_out").n_unique().alias("gpus"))
            .sort("op"))


def spec_rows(devices: Mapping[str, Mapping]) -> pl.DataFrame:
    """The devices' spec sheets as a frame (device, SPEC_KEYS)."""
    return pl.DataFrame([{"device": n, **{k: float(s[k]) for k in SPEC_KEYS}}
                         for n, s in devices.items()])


def transfer_bounds(frame: pl.DataFrame, devices: Mapping[str, Mapping]) -> pl.DataFrame:
    """What the other GPUs' own measurements of the same shapes can say about a held-out GPU:
    reference points for leave-one-GPU-out that no spec-only model should expect to beat.

    Per GPU chip, op and shape, r = log(latency / roofline) (median over repeats). For each
    held-out chip and op, MdAPE (%) on the shapes it shares with at least one other chip of:
      `shape_mean`         r predicted as the mean r of the other chips on that very shape
                           (a lookup of their measurements: no shape interpolation needed);
      `shape_mean_scaled`  the same plus one constant fitted on the held-out chip itself;
      `best_chip_scaled`   the single other chip whose r, plus such a constant, fits best.
    The last two use the held-out chip's own latencies (one number each), so they are not
    predictors but bounds on how far per-shape behaviour transfers between these GPUs.
    Returns rows [held_out, op ('all' or an op), shapes, shape_mean, shape_mean_scaled,
    best_chip_scaled].
    """
    rows = kernel_rows(frame, devices, need_latency=True)
    roof = features(rows.ops, rows.shape, rows.spec)[1]
    keys = [c for c in SHAPE_COLUMNS if np.isfinite(rows.shape[c]).any()]
    chip = gpu_groups(devices, rows.devices)
    r = pl.DataFrame({"chip": chip, "op": rows.ops.astype(str),
                      "r": np.log(rows.latency_ms / roof),
                      **{c: np.nan_to_num(rows.shape[c], nan=-1.0) for c in keys}})
    wide = (r.group_by(["op", "chip", *keys]).agg(pl.col("r").median())
            .pivot(on="chip", index=["op", *keys], values="r"))
    chips = sorted(set(chip))

    def err(x: np.ndarray) -> float:
        return float(np.median(np.abs(np.expm1(x))) * 100)

    out = []
    for held in chips:
        others = [c for c in chips if c != held]
        names = ", ".join(sorted(set(rows.devices[chip == held])))
        for op in ["all", *sorted(set(r["op"]))]:
            part = wide if op == "all" else wide.filter(pl.col("op") == op)
            part = part.filter(pl.col(held).is_not_null()
                               & pl.any_horizontal(pl.col(others).is_not_null()))
            if part.height == 0:
                continue
            y, rest = part[held].to_numpy(), part.select(others).to_numpy()
            mean = np.nanmean(rest, axis=1)
            best = min(err(rest[m, j] + np.median(y[m] - rest[m, j]) - y[m])
                       for j in range(len(others)) if (m := np.isfinite(rest[:, j])).any())
            out.append({"held_out": names, "op": op, "shapes": part.height,
                        "shape_mean": err(mean - y),
                        "shape_mean_scaled": err(mean + np.median(y - mean) - y),
                        "best_chip_scaled": best})
    return pl.DataFrame(out)


#: measured-latency bands (ms, lower edges) of `efficiency_bands`
LATENCY_BANDS = (0.0, 0.1, 1.0, 10.0)


def efficiency_bands(frame: pl.DataFrame, devices: Mapping[str, Mapping],
                     ops: Sequence[str] = ("bmm", "linear")) -> pl.DataFrame:
    """Where a GPU's own behaviour sits: per GPU chip, op and band of measured latency
    (`LATENCY_BANDS`), the median fraction of the learner's roofline the kernels reach,
    roofline time (power-limited fp32 peak, no launch floor) / measured latency. A spec-only
    model cannot follow a chip whose fraction in a band differs from the other chips'.
    Returns rows [held_out, op, band ("lo-hi ms"), rows, efficiency]."""
    from servecast.predictors.kernel_latency.physics import kernel_work, roofline_ms

    part = frame.filter(pl.col("op").is_in(list(ops)))
    rows = kernel_rows(part, devices, need_latency=True)
    t_comp, t_mem = roofline_ms(kernel_work(rows.ops, rows.shape), rows.spec)
    eff = np.maximum(t_comp, t_mem) / rows.latency_ms
    chip = gpu_groups(devices, rows.devices)
    band = np.searchsorted(LATENCY_BANDS, rows.latency_ms, side="right") - 1
    edges = [*LATENCY_BANDS[1:], np.inf]
    out = []
    for g in sorted(set(chip)):
        names = ", ".join(sorted(set(rows.devices[chip == g])))
        for op in ops:
            for b, (lo, hi) in enumerate(zip(LATENCY_BANDS, edges, strict=True)):
                m = (chip == g) & (rows.ops == op) & (band == b)
                if m.any():
                    out.append({"held_out": names, "op": op, "band": f"{lo:g}-{hi:g} ms",
                                "rows": int(m.sum()), "efficiency": float(np.median(eff[m]))})
    return pl.DataFrame(out)
