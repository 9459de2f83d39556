"""LLM request traces: arrivals and burstiness, inter-arrival fits, lengths and the
request->response relation, sessions and prefix reuse, failures; filtered by model, log type
and arrival window."""

from __future__ import annotations

import streamlit as st

from servecast.analytics import interactive as charts
from servecast.app import common

trace = common.page_trace("Traces", "llm_requests")
f = common.request_filters(trace)
A = common.analysis

summary = common.query(f"""SELECT count(*) AS requests, max(arrival_s) - min(arrival_s) AS span_s,
                                  median(prompt_tokens) AS prompt_p50,
                                  median(output_tokens) AS output_p50,
                                  avg(failed::INT) AS failure_rate
                           FROM llm_requests WHERE {f.where()}""").row(0, named=True)
common.metrics({"requests": summary["requests"], "span (s)": summary["span_s"],
                "prompt p50 (tok)": summary["prompt_p50"],
                "output p50 (tok)": summary["output_p50"],
                "failed share": summary["failure_rate"]})
if not summary["requests"]:
    st.warning("No request matches these filters.")
    st.stop()
has_time = summary["span_s"] is not None and summary["span_s"] > 0

arrivals, lengths, sessions, failures = st.tabs(
    ["Arrivals", "Lengths", "Sessions & prefix reuse", "Failures"])

with arrivals:
    if not has_time:
        st.info("This trace has no arrival times.")
    else:
        choices = {"1 s": 1.0, "10 s": 10.0, "1 min": 60.0, "10 min": 600.0, "1 h": 3600.0}
        default = "1 min" if summary["span_s"] < 6 * 3600 else "1 h"
        label = st.select_slider("rate bin", list(choices), value=default, key="rate_bin")
        bin_s = choices[label]
        common.chart(charts.rate_series(A("arrivals.rate_series", f, bin_s=bin_s), bin_s),
                      f"{trace}_rate")
        common.table(A("arrivals.burstiness", f, by_segment=True), f"{trace}_burstiness",
                     "Burstiness per model x log type (cv > 1: burstier than Poisson)")
        quant = A("arrivals.timestamp_quantization", f, n=20_000)
        fits = A("arrivals.interarrival_fits", f, n=20_000)
        gaps = A("arrivals.interarrival_sample", f, n=20_000)
        if quant["quantized"]:
            st.warning(quant["message"])
        elif fits.height:
            common.chart(charts.interarrival_ccdf(gaps, fits), f"{trace}_interarrival_fit")
            common.table(fits, f"{trace}_interarrival_fits", "MLE fits of inter-arrival gaps")

with lengths:
    prompt = A("lengths.length_histogram", f, field="prompt_tokens")
    output = A("lengths.length_histogram", f, field="output_tokens")
    common.chart(charts.length_histograms(prompt, output), f"{trace}_lengths")
    common.table(A("lengths.length_quantiles", f), f"{trace}_length_quantiles",
                 "Length quantiles (tokens)")
    cond = A("lengths.conditional_output", f)
    if cond.height:
        common.chart(charts.conditional_output(cond), f"{trace}_request_response")
        common.table(cond, f"{trace}_request_response",
                     "Output-length quantiles per prompt-length bin (request -> response)")

with sessions:
    shown = False
    if A("sessions.has_sessions", f):
        shown = True
        ss = A("sessions.session_summary", f)
        common.metrics({k: ss.get(k) for k in ("sessions", "multi_turn_share", "turns_mean",
                                               "turns_max", "gap_p50_s")})
        common.chart(charts.turns_and_growth(A("sessions.turns_distribution", f),
                                             A("sessions.prompt_growth", f)),
                      f"{trace}_sessions")
    reuse = A("prefix_cache.prefix_reuse", f)
    if reuse.get("block_accesses"):
        shown = True
        common.metrics({k: reuse[k] for k in ("requests", "unique_blocks", "reuse_share")
                        if k in reuse})
        lru = A("prefix_cache.lru_hit_ratios", f)
        common.chart(charts.lru_hit_ratio(lru, reuse.get("reuse_share")), f"{trace}_lru")
    if not shown:
        st.info("This trace has neither session ids nor prefix hashes.")

with failures:
    fs = A("failures.failure_summary", f)
    common.metrics(fs)
    if fs.get("failed") and has_time:
        bin_s = 3600.0 if summary["span_s"] > 6 * 3600 else 60.0
        common.chart(charts.failure_series(A("failures.failure_series", f, bin_s=bin_s), bin_s),
                      f"{trace}_failures")
        common.chart(charts.failure_vs_load(A("failures.failure_vs_load", f)),
                      f"{trace}_failures_vs_load")
    elif not fs.get("failed"):
        st.info("No failed request in this selection.")
