"""Output length: train and evaluate the metadata model on a trace (fast settings, on
request), its calibration and errors against the baselines, and a what-if replay of
scheduling policies that use its predictions."""

from __future__ import annotations

import tempfile

import polars as pl
import streamlit as st

from servecast.analytics import interactive as charts
from servecast.app import common
from servecast.errors import ServecastError
from servecast.simulator import POLICIES, ServingConfig, no_gain_reason, sjf_gain, whatif
from servecast.simulator.replay import WHATIF_KV_TOKENS

# Azure conversation shows the predictor best (bimodal outputs that prompts partly explain)
trace = common.page_trace("Output length", "llm_requests", prefer="azure_conv")
rows = st.sidebar.select_slider("requests used (random sample)", [2000, 5000, 10000, 20000],
                                value=5000, key="ol_rows")


@st.cache_resource(show_spinner="training the metadata model (fast settings) ...",
                   max_entries=8)
def train(path: str, trace: str, rows: int) -> dict:
    """train_output_length on a `rows` sample, plus the held-out rows and their predictions."""
    from servecast.predictors.output_length.core import completed
    from servecast.predictors.output_length.train import summary, train_output_length

    res = common.on_store(path, train_output_length, trace,
                          tempfile.mkdtemp(prefix="servecast-output-length-"), fast=True,
                          max_rows=rows)
    test = completed(res["test"])
    return {**res, "summary": summary(res), "test": test, "pred": res["model"].predict(test)}


st.caption("LightGBM quantile model on prompt length, model, log type and session context "
           "(80 trees), trained on the first 70 % of the sampled requests by arrival time and "
           "scored on the rest against three baselines.")
if not common.clicked("Train & evaluate", "ol_train", (trace, rows), type="primary"):
    st.info("Click **Train & evaluate** to fit the model on this trace (a few seconds).")
    st.stop()
res = train(str(common.db_file()), trace, rows)
m = res["metrics"]
common.metrics({"test requests": m["n"], "MAE p50 (tokens)": m["mae_p50"],
                "Kendall tau": m["kendall_tau"], "coverage p90": m["coverage_p90"],
                "fit (s)": res["seconds"]})
common.table(res["summary"], f"{trace}_output_length_metrics",
             f"Held-out metrics (tokens); split: {res['split']}")
curves = {res["model"].name: m} | ({"online calibration": res["online_metrics"]}
                                   if res["online_metrics"] else {}) | res["baselines"]
common.chart(charts.calibration(curves), f"{trace}_calibration")
common.chart(charts.prediction_errors(res["test"]["output_tokens"].to_numpy(),
                                   res["pred"]["p50"].to_numpy(), res["pred"]["p90"].to_numpy()),
              f"{trace}_errors")

# -- what-if ---------------------------------------------------------------------------------
st.subheader("What-if: scheduling with predicted lengths")
test = res["test"]
if test["arrival_s"].null_count() or test["arrival_s"].n_unique() < 2:
    st.info(f"{trace} has no arrival times: the what-if replay needs a trace with arrivals "
            "(e.g. azure_conv, mooncake_conversation).")
    st.stop()
c1, c2, c3 = st.columns(3)
load = c1.slider("load factor (x saturation throughput)", 0.3, 1.5, 0.9, 0.05, key="wi_load")
kv = c2.select_slider("KV-cache budget (tokens)", [30_000, 40_000, 60_000, 120_000, 240_000],
                      value=WHATIF_KV_TOKENS, key="wi_kv")
n = c3.select_slider("requests replayed", [250, 500, 1000, 2000], value=500, key="wi_rows")
policies = st.multiselect("policies", list(POLICIES), default=list(POLICIES), key="wi_policies")


@st.cache_data(show_spinner="replaying the trace ...", max_entries=64)
def replay(path: str, trace: str, rows: int, n: int, load: float, kv: int,
           policies: tuple[str, ...]) -> pl.DataFrame:
    """`whatif` on the first `n` held-out requests with the trained model's p50/p90."""
    r = train(path, trace, rows)
    return whatif(r["test"][:n], r["pred"]["p50"][:n].to_numpy(), r["pred"]["p90"][:n].to_numpy(),
                  load=load, policies=policies, config=ServingConfig(kv_tokens=kv))


if not policies:
    st.info("Pick at least one policy.")
    st.stop()
try:
    sim = replay(str(common.db_file()), trace, rows, n, load, kv, tuple(policies))
except ServecastError as e:
    st.warning(str(e))
    st.stop()
tiles = {"capacity (req/s)": sim["capacity_rps"][0], "arrivals (req/s)": sim["arrival_rps"][0]}
gain = sjf_gain(sim) if {"fcfs", "sjf_pred", "sjf_oracle"} <= set(policies) else False
if gain is not False:
    tiles["SJF gain captured"] = gain
common.metrics(tiles)
if gain is None:
    st.info(no_gain_reason(sim))
common.chart(charts.whatif_policies(sim), f"{trace}_whatif")
common.table(sim.drop("load", "capacity_rps", "arrival_rps"), f"{trace}_whatif",
             "Per policy: job completion and first-token times (s), throughput, preemptions")
