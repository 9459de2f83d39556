"""Latency of LLM request traces that carry it (user logs, benchmark results): TTFT, TPOT,
end-to-end and queueing percentiles over time and against load, SLO attainment and goodput
for limits set on the page; filtered by model, log type and arrival window."""

from __future__ import annotations

import streamlit as st

from servecast.analytics import interactive as charts
from servecast.analytics.characterize import latency_window
from servecast.app import common

trace = common.page_trace("Latency", "llm_requests")
f = common.request_filters(trace)
A = common.analysis

metrics = A("latency.latency_metrics", f)
if not metrics:
    st.info("This trace has no latency columns (ttft_s, tpot_s, elapsed_s, queue_s). Ingest "
            "request logs with latencies (`servecast ingest user-log`) or benchmark results.")
    st.stop()
span = common.query(f"SELECT max(arrival_s) - min(arrival_s) AS s FROM llm_requests "
                    f"WHERE {f.where()}").item() or 0.0
bin_s = latency_window(span)
overall = A("latency.latency_percentiles", f)
common.metrics({f"{r['metric']} p50 (s)": r["p50"] for r in overall.iter_rows(named=True)})
common.table(overall, f"{trace}_latency", "Latency percentiles (s, successful requests)")
common.chart(charts.latency_series(A("latency.latency_percentiles", f, bin_s=bin_s)),
             f"{trace}_latency_over_time")
load = st.radio("load", ["concurrency", "rate"], horizontal=True, key="lat_load",
                format_func={"concurrency": "requests in flight at arrival",
                             "rate": "arrival rate of the window"}.get)
if load == "concurrency" and "elapsed_s" not in metrics:
    st.info("Concurrency needs end-to-end latencies (elapsed_s); showing the arrival rate.")
    load = "rate"
label = ("requests in flight at arrival" if load == "concurrency"
         else f"arrival rate of the {bin_s:g} s window (req/s)")
common.chart(charts.latency_vs_load(A("latency.latency_vs_load", f, load=load, bin_s=bin_s),
                                    label), f"{trace}_latency_vs_{load}")

st.subheader("SLO attainment and goodput")
names = {"ttft_s": "TTFT", "tpot_s": "TPOT", "elapsed_s": "e2e", "queue_s": "queue"}
defaults = {"ttft_s": 500.0, "tpot_s": 50.0, "elapsed_s": 20_000.0, "queue_s": 100.0}
cols = st.columns(len(metrics))
slo = {}
for col, m in zip(cols, metrics, strict=True):
    ms = col.number_input(f"{names[m]} limit (ms, 0 = none)", min_value=0.0,
                          value=defaults[m] if m in ("ttft_s", "tpot_s") else 0.0,
                          key=f"slo_{m}")
    if ms > 0:
        slo[m] = ms / 1000.0
if slo:
    limits = ", ".join(f"{names[m]} <= {v * 1000:g} ms" for m, v in slo.items())
    o = A("latency.slo_attainment", f, slo=slo).row(0, named=True)
    common.metrics({"SLO attainment": o["attainment"], "goodput (req/s)": o["goodput_rps"],
                    "goodput (output tok/s)": o["goodput_tokens_per_s"]})
    common.chart(charts.slo_series(A("latency.slo_attainment", f, slo=slo, bin_s=bin_s),
                                   limits), f"{trace}_slo")
else:
    st.info("Set at least one limit to see the SLO attainment.")
