"""Cluster traces: job durations, status, GPU requests and queueing delay; cluster-level
series (queue length, utilization, active nodes); node inventory."""

from __future__ import annotations

import streamlit as st

from servecast.analytics import interactive as charts
from servecast.app import common

trace = common.page_trace("Cluster", "cluster_jobs", "cluster_series", "cluster_nodes")
T = common.trace_analysis

if common.has_table(trace, "cluster_jobs"):
    st.subheader("Jobs")
    summary = T("cluster.job_summary", trace)
    common.metrics({"jobs": summary["jobs"], "duration p50 (s)": summary["duration_p50_s"],
                    "duration p99 (s)": summary["duration_p99_s"],
                    "queue p50 (s)": summary["queue_p50_s"], "GPU jobs": summary["gpu_jobs"]})
    ecdf = T("cluster.duration_ecdf", trace)
    if ecdf.height:
        common.chart(charts.ecdf({trace: ecdf}, "Job duration (CDF)", "duration (s)"),
                      f"{trace}_duration_cdf")
    status = T("cluster.status_breakdown", trace)
    common.chart(charts.bars(status, "status", "jobs", "Jobs by final status", "jobs"),
                  f"{trace}_status")
    common.table(status, f"{trace}_status", "Jobs and GPU-hours by status")
    gpu = T("cluster.gpu_request_sizes", trace)
    if gpu.height:
        common.table(gpu, f"{trace}_gpu_requests", "GPUs requested per instance")
    queue = T("cluster.queueing_delay", trace)
    if queue["value"].drop_nulls().len():
        common.table(queue, f"{trace}_queueing", "Queueing delay quantiles (s)")

if common.has_table(trace, "cluster_series"):
    st.subheader("Cluster series")
    stats = T("cluster.series_stats", trace)
    common.table(stats, f"{trace}_series_stats", "Per series and metric")
    metric = st.selectbox("metric", stats["metric"].unique(maintain_order=True).to_list(),
                          key="series_metric")
    every = st.selectbox("bucket", ["10 minutes", "1 hour", "1 day"], index=1, key="series_every")
    values = T("cluster.series_values", trace, metric=metric, every=every)
    common.chart(charts.series_lines(values, f"{metric} (mean per {every})", metric),
                  f"{trace}_{metric}_series")

if common.has_table(trace, "cluster_nodes"):
    st.subheader("Nodes")
    common.table(T("cluster.node_inventory", trace), f"{trace}_nodes", "Node inventory")
