"""Capacity: the highest Poisson rate a deployment serves within a p99 TTFT / TPOT SLO
(MLPerf's Server rule) on a named workload, simulated, with its latency-vs-load curve and
knee; the max batch fixed or tuned (`auto`, `simulator.max_batch`). Nothing is read from the
store: the deployment and workload are chosen here."""

from __future__ import annotations

import polars as pl
import streamlit as st

from servecast import gpus
from servecast.analytics import interactive as charts
from servecast.analytics.capacity import curve_frame, knee
from servecast.app import common
from servecast.errors import ServecastError
from servecast.predictors.step_time.configs import shipped
from servecast.simulator import max_batch, search, workloads
from servecast.simulator.deployment import ENGINE_EFFICIENCY, Deployment

common.setup("Capacity")
side = st.sidebar
model = side.selectbox("model", shipped(), index=shipped().index("llama-3.1-8b"), key="cap_m")
gpu = side.selectbox("GPU", list(gpus.catalog()), index=list(gpus.catalog()).index("h100-sxm"),
                     key="cap_g")
tp = side.selectbox("tensor parallelism", [1, 2, 4, 8], key="cap_tp")
dtype = side.selectbox("dtype", ["bf16", "fp8"], key="cap_dt")
engine = side.selectbox("engine", list(ENGINE_EFFICIENCY), key="cap_e")
max_seqs = side.selectbox("max batch (max_num_seqs)", ["256", "auto"], key="cap_b",
                          help="auto: the cap of the highest capacity, as a submitter tunes "
                          "it (simulator.max_batch)")
workload = side.selectbox("workload", workloads.names(), key="cap_w")
ttft = side.number_input("p99 TTFT limit (ms)", min_value=1.0, value=2000.0, key="cap_ttft")
tpot = side.number_input("p99 TPOT limit (ms)", min_value=1.0, value=200.0, key="cap_tpot")
requests = side.select_slider("requests per probe", [100, 200, 500, 1000], value=200,
                              key="cap_n")
seeds = side.select_slider("seeds", [1, 2, 3], value=2, key="cap_s")


@st.cache_data(show_spinner="searching the capacity (simulating) ...", max_entries=16)
def search_capacity(model, gpu, tp, dtype, engine, max_seqs, workload, ttft, tpot, requests,
                    seeds) -> dict:
    given = max_batch.parse_cap(max_seqs)  # None: auto
    deployment = Deployment(model=model, gpu=gpu, tp=tp, dtype=dtype, engine=engine,
                            max_num_seqs=given or Deployment.max_num_seqs)
    sample = search.poisson_sample(workload, requests)
    cap, compiled, _tuned = max_batch.capacity_at(search.compile_replica(deployment),
                                                  search.SLO(ttft, tpot), sample,
                                                  given is None, seeds)
    curve = search.load_curve(compiled, sample)
    return {"rate": cap.rate, "low": cap.low, "high": cap.high,
            "saturation": cap.saturation_rps, "probes": len(cap.probes), "curve": curve,
            "max_num_seqs": compiled.deployment.max_num_seqs}


st.caption("Each probe simulates one replica on Poisson arrivals (step-time physics model, "
           "vLLM-like scheduler); the rate is bisected until the p99 limits barely hold, per "
           "seed.")
token = (model, gpu, tp, dtype, engine, max_seqs, workload, ttft, tpot, requests, seeds)
if not common.clicked("Find capacity", "cap_run", token, type="primary"):
    st.info("Pick a deployment and an SLO, then click **Find capacity** (seconds to a "
            "minute).")
    st.stop()
try:
    res = search_capacity(*token)
except ServecastError as e:
    st.error(str(e))
    st.stop()
curve = curve_frame(res["curve"])
k = knee(curve, "p99_ttft_ms")
common.metrics({"capacity (req/s)": res["rate"], "seed min (req/s)": res["low"],
                "seed max (req/s)": res["high"], "Offline throughput (req/s)":
                res["saturation"], "TTFT knee (req/s)": k["rate"] if k else None,
                "max batch": res["max_num_seqs"]})
common.chart(charts.load_curve(curve, ttft, tpot), f"capacity_{model}_{gpu}_tp{tp}")
common.table(curve.select(pl.exclude("requests")), f"capacity_{model}_{gpu}_tp{tp}_curve",
             "Latency vs load (ms; load = rate / Offline throughput)")
