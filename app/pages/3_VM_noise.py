"""VM performance noise (Azure VM Noise / TUNA): run-to-run variability per benchmark and
SKU, drift of long-lived VMs, one benchmark over time, and the saved interference model's
test accuracy."""

from __future__ import annotations

import polars as pl
import streamlit as st

from servecast.analytics import interactive as charts
from servecast.app import common
from servecast.errors import ServecastError
from servecast.predictors.base import read_card

trace = common.page_trace("VM noise", "vm_measurements")
T = common.trace_analysis

st.subheader("Variability by SKU")
common.table(T("vm_noise.by_sku", trace), f"{trace}_by_sku",
             "Median over benchmarks of cv and p1/p99 relative to the median")
var = T("vm_noise.variability", trace)
common.chart(charts.vm_variability(var), f"{trace}_variability")
common.table(var, f"{trace}_variability", "Benchmark groups, noisiest first")

st.subheader("Drift of long-lived VMs")
drift = T("vm_noise.drift", trace)
if drift.height:
    common.table(drift, f"{trace}_drift", "Relative change per day (median over VMs)")
else:
    st.info("No VM observed long enough for drift.")

st.subheader("One benchmark over time")
tests = var["test_name"].unique().sort().to_list()
test = st.selectbox("benchmark", tests, key="vm_test")
series = T("vm_noise.vm_series", trace, test_name=test)
lines = series.with_columns(
    series=series["vm_sku"].fill_null("?") + " / " + series["vm_lifespan"].fill_null("?"))
common.chart(charts.series_lines(lines.select("series", "ts", "value"),
                                 f"{test}: daily median", "value"), f"{trace}_{test}_series")

st.subheader("Interference model")
model_dir = common.out_dir() / "models" / "interference"
card = None
if not (model_dir / "model_card.json").is_file():
    st.info(f"No interference model in `{model_dir}` (`servecast demo` or `servecast train "
            "interference --task fingerprint` writes one).")
else:
    try:
        card = read_card(model_dir, "interference")  # checks the kind and format version
    except ServecastError as e:
        st.warning(str(e))
if card is not None:
    test = card.get("test") or {}
    common.metrics({"task": card.get("task", "your windows"), "model": card.get("model"),
                    "training windows": card.get("split", {}).get("train_windows"),
                    "test MAE (pp of perf)": test.get("mae_pp")})
    if test:
        groups = [("all", test), *sorted(test.get("by_group", {}).items())]
        common.table(pl.DataFrame([{"group": g, "windows": r["n"], "mae_pp": r["mae_pp"],
                                    "bias_pp": 100 * r["bias"]} for g, r in groups]),
                     "interference_test",
                     f"Test split ({card.get('split', {}).get('rule', 'held out')}); perf in "
                     "(0, 1], 1 = no degradation; bias > 0: predicted too high")
    st.caption(f"`{model_dir}`: schedulers call `Estimator.load(...).interference(window)` "
               "with a long frame `t, metric, value` or a mapping metric -> recent values.")
