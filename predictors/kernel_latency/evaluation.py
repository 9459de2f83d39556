"""Evaluation protocols: leave-one-GPU-out on NeuSight and model hold-out on Vidur."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import polars as pl

from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor, mdape
from servecast.predictors.kernel_latency.specs import SPEC_KEYS


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
                      make: Callable[[], KernelLatencyPredictor],
                      log: Callable[[str], None] | None = None) -> pl.DataFrame:
    """Fit on all GPUs but one, predict the held-out GPU from its spec; repeat for each.

    Returns rows [held_out, op ('all' or an op), rows, mdape, roofline_mdape] (MdAPE in %).
    """
    names = frame["device"].to_numpy()
    groups = gpu_groups(devices, names)
    rows = []
    for g in sorted(set(groups)):
        test = groups == g
        held = ", ".join(sorted(set(names[test])))
        model = make().fit(frame.filter(pl.Series(~test)), devices)
        part = frame.filter(pl.Series(test))
        pred = model.predict(part, devices)
        roof = model.predict_roofline(part, devices)
        res = _summary(held, part["op"].to_numpy(), pred, roof, part["latency_ms"].to_numpy())
        if log:
            log(f"held out {held}: MdAPE {res[0]['mdape']:.1f}% (roofline "
                f"{res[0]['roofline_mdape']:.1f}%)")
        rows += res
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
