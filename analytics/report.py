"""Batch report of one trace: a self-contained HTML file (figures embedded as base64 PNG,
no scripts, readable offline) plus `summary.json`, with the figure set chosen by the
trace's kind (LLM requests, cluster, VM noise)."""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime
from importlib import metadata
from pathlib import Path

import jinja2
import polars as pl

from servecast.analytics import (
    arrivals,
    cluster,
    failures,
    lengths,
    plots,
    sessions,
    vm_noise,
)
from servecast.analytics.characterize import characterize, trace_kind
from servecast.analytics.source import source
from servecast.numbers import fmt
from servecast.store import Store

TEMPLATE = "report.html.j2"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(title: str, df: pl.DataFrame, max_rows: int = 20) -> dict:
    return {"title": title, "columns": df.columns,
            "rows": [[fmt(v) for v in r] for r in df.head(max_rows).iter_rows()]}


def _rate_bin(span_s: float) -> float:
    """Rate-series bin (s): 1 s up to 15 min of trace, 1 min up to 3 days, else 1 h."""
    return 1.0 if span_s <= 900 else 60.0 if span_s <= 3 * 86400 else 3600.0


# -- per kind: key numbers, tables, figures -------------------------------------------------
def _llm(store: Store, trace: str, summary: dict) -> tuple[list, list, list]:
    s = source(store, trace, "llm_requests")
    keys, tables, figs = [("requests", summary["requests"])], [], []
    q = {r["field"]: r for r in summary["lengths"]["quantiles"]}
    arr = summary.get("arrivals")
    if arr:
        o = arr["overall"]
        if arr["quantization"]["quantized"]:
            keys.append(("warning", arr["quantization"]["message"]))
        keys += [("span (s)", o["span_s"]), ("mean rate (req/s)", o["rate_per_s"]),
                 ("inter-arrival CV", o["cv"]), ("burstiness B", o["burstiness_b"]),
                 ("index of dispersion 1 / 10 / 60 s",
                  [o["idc_1s"], o["idc_10s"], o["idc_60s"]]),
                 ("peak-to-mean 60 s", o["peak_to_mean_60s"]),
                 ("best inter-arrival fit (KS / AIC)",
                  f"{arr['best_fit_ks']} / {arr['best_fit_aic']}")]
    keys += [("prompt tokens p50 / p99", [q["prompt_tokens"]["p50"], q["prompt_tokens"]["p99"]]),
             ("output tokens p50 / p99", [q["output_tokens"]["p50"], q["output_tokens"]["p99"]])]
    ob = summary["lengths"]["output_bimodality"]
    keys.append(("output bimodal (modes, tokens)",
                 f"{fmt(ob['bimodal'])} ({fmt(ob['modes_tokens'])})" if ob["bimodal"]
                 else "no"))
    keys += [("prompt Zipf exponent / Hill tail index",
              [summary["lengths"]["prompt_tail"]["zipf_exponent"],
               summary["lengths"]["prompt_tail"]["hill_tail_index"]]),
             ("prompt-output Spearman", summary["lengths"]["correlations"]["spearman"])]
    if "failures" in summary:
        keys.append(("failure rate", summary["failures"]["failure_rate"]))
    if "sessions" in summary:
        keys += [("sessions", summary["sessions"]["sessions"]),
                 ("turns per session mean / p90",
                  [summary["sessions"]["turns_mean"], summary["sessions"]["turns_p90"]])]
    if "prefix_reuse" in summary:
        keys.append(("prefix blocks seen before", summary["prefix_reuse"]["reuse_share"]))

    quant = pl.DataFrame(summary["lengths"]["quantiles"])
    tables.append(_table("Length quantiles (tokens)", quant))
    if arr:
        fits = pl.DataFrame(arr["interarrival_fits"])
        if fits.height:
            tables.append(_table("Inter-arrival fits (MLE)", fits))
        if len(arr["segments"]) > 1:
            tables.append(_table("Arrivals per segment", pl.DataFrame(arr["segments"])))
        span = arr["overall"]["span_s"] or 0.0
        b = _rate_bin(span)
        figs.append(("Request rate over time", plots.rate_series(
            arrivals.rate_series(s, bin_s=b), b)))
        figs.append(("Inter-arrival CCDF" + (" with MLE fits" if fits.height else
                                             " (quantized: no fits)"), plots.interarrival_ccdf(
            arrivals.interarrival_sample(s, n=50_000), fits)))
        prof = arrivals.weekly_profile(s)
        if prof.height:
            figs.append(("Rate by day and hour", plots.weekly_heatmap(prof)))
        if arr["patterns"]:
            figs.append(("Daily and weekly patterns", plots.periodic_profiles(
                {k: pl.DataFrame(v) for k, v in arr["patterns"].items()})))
        if summary["failures"]["failed"]:
            fb = 3600.0 if span > 6 * 3600 else 60.0
            figs.append(("Failure rate over time",
                         plots.failure_series(failures.failure_series(s, bin_s=fb), fb)))
            figs.append(("Failure rate against load",
                         plots.failure_vs_load(failures.failure_vs_load(s))))
    figs.append(("Prompt and output length distributions", plots.length_histograms(
        lengths.length_histogram(s, field="prompt_tokens"),
        lengths.length_histogram(s, field="output_tokens"))))
    for by in ("model", "log_type"):
        if f"by_{by}" in summary["lengths"]:
            tables.append(_table(f"Lengths per {by} (tokens)",
                                 pl.DataFrame(summary["lengths"][f"by_{by}"])))
            figs.append((f"Length distributions per {by}", plots.lengths_by_segment(
                lengths.length_histogram(s, field="prompt_tokens", by=by),
                lengths.length_histogram(s, field="output_tokens", by=by))))
    figs.append(("Zipf rank-frequency of lengths", plots.rank_frequency(
        lengths.rank_frequency(s, field="prompt_tokens"),
        lengths.rank_frequency(s, field="output_tokens"),
        (summary["lengths"]["prompt_tail"]["zipf_exponent"],
         summary["lengths"]["output_tail"]["zipf_exponent"]))))
    cond = lengths.conditional_output(s)
    if cond.height:
        figs.append(("Output length conditional on prompt length",
                     plots.conditional_output(cond)))
    if "latency" in summary:
        _latency_views(summary["latency"], keys, tables, figs)
    if "sessions" in summary:
        figs.append(("Sessions: turns and prompt growth", plots.turns_and_growth(
            sessions.turns_distribution(s), sessions.prompt_growth(s))))
    if "prefix_reuse" in summary:
        lru = pl.DataFrame(summary["prefix_reuse"]["lru"])
        tables.append(_table("LRU prefix cache hit ratio", lru))
        figs.append(("Prefix cache hit ratio vs capacity",
                     plots.lru_hit_ratio(lru, summary["prefix_reuse"]["reuse_share"])))
    return keys, tables, figs


def _latency_views(lat: dict, keys: list, tables: list, figs: list) -> None:
    overall = pl.DataFrame(lat["overall"])
    for r in overall.iter_rows(named=True):
        keys.append((f"{r['metric']} p50 / p90 / p99 (s)", [r["p50"], r["p90"], r["p99"]]))
    tables.append(_table("Latency percentiles (s, successful requests)", overall))
    figs.append((f"Latency percentiles per {lat['window_s']:g} s window",
                 plots.latency_series(pl.DataFrame(lat["windows"]))))
    if "vs_concurrency" in lat:
        figs.append(("Latency against concurrency", plots.latency_vs_load(
            pl.DataFrame(lat["vs_concurrency"]), "requests in flight at arrival")))
    figs.append(("Latency against arrival rate", plots.latency_vs_load(
        pl.DataFrame(lat["vs_rate"]), f"arrival rate of the {lat['window_s']:g} s window "
        "(req/s)")))
    if "slo" in lat:
        o = lat["slo"]["overall"]
        limits = ", ".join(f"{m} <= {v * 1000:g} ms" for m, v in lat["slo"]["limits_s"].items())
        keys += [(f"SLO attainment ({limits})", o["attainment"]),
                 ("goodput (req/s, output tokens/s)",
                  [o["goodput_rps"], o["goodput_tokens_per_s"]])]
        figs.append(("SLO attainment over time", plots.slo_series(
            pl.DataFrame(lat["slo"]["windows"]), limits)))


def _cluster(store: Store, trace: str, summary: dict) -> tuple[list, list, list]:
    keys, tables, figs = [], [], []
    jobs = summary.get("jobs")
    if jobs:
        keys += [("jobs", jobs["jobs"]), ("duration p50 / p99 (s)",
                                          [jobs["duration_p50_s"], jobs["duration_p99_s"]]),
                 ("queueing delay p50 / p99 (s)", [jobs["queue_p50_s"], jobs["queue_p99_s"]]),
                 ("jobs requesting GPUs", jobs["gpu_jobs"])]
        tables.append(_table("Status breakdown", pl.DataFrame(jobs["status"])))
        if jobs["with_duration"]:
            figs.append(("Job duration CDF", plots.ecdf(
                {"all jobs": cluster.duration_ecdf(store, trace)}, "Job duration CDF",
                "duration (s)")))
        st = pl.DataFrame(jobs["status"])
        if st.height > 1 or st.item(0, "status") != "(none)":
            figs.append(("Jobs by status", plots.bars(st, "status", "jobs", "Jobs by status",
                                                      "jobs")))
        gpu = pl.DataFrame(jobs["gpu_request_sizes"])
        if gpu.height:
            figs.append(("GPU request sizes", plots.bars(
                gpu.with_columns(pl.col("gpu_request").cast(pl.Utf8)), "gpu_request", "jobs",
                "Jobs by GPUs requested per instance", "jobs")))
        qd = pl.DataFrame(jobs["queueing_delay"])
        if qd.height and jobs["with_queue"]:
            tables.append(_table("Queueing delay quantiles (s)", qd))
    if "series" in summary:
        ss = pl.DataFrame(summary["series"])
        keys.append(("series x metrics", ss.height))
        tables.append(_table("Series statistics", ss.drop("start", "end"), 40))
        metrics = ss["metric"].unique(maintain_order=True).to_list()
        util = [m for m in metrics if "util" in m] or metrics[:1]
        for m in util[:2]:
            figs.append((f"{m} (hourly mean)", plots.series_lines(
                cluster.series_values(store, trace, m), f"{m}, hourly mean per series", m)))
    if "nodes" in summary:
        nodes = pl.DataFrame(summary["nodes"])
        per_list = nodes.group_by("inventory").agg(pl.col("nodes").sum()).sort("inventory")
        keys.append(("nodes per inventory", ", ".join(
            f"{i}: {n:,}" for i, n in per_list.iter_rows())))
        tables.append(_table("Node inventory by GPU model", nodes))
        main_list = per_list.sort("nodes", descending=True).item(0, "inventory")
        figs.append(("Nodes by GPU model", plots.bars(
            nodes.filter(pl.col("inventory") == main_list), "gpu_model", "nodes",
            f"Nodes by GPU model ({main_list})", "nodes")))
    return keys, tables, figs


def _vm(store: Store, trace: str, summary: dict) -> tuple[list, list, list]:
    keys = [("runs", summary["runs"]), ("VMs", summary["vms"]),
            ("benchmarks", summary["benchmarks"]), ("benchmark groups", summary["groups"]),
            ("period", f"{summary['first']} .. {summary['last']}")]
    tables = [_table("Variability by SKU and lifespan (median over benchmarks)",
                     pl.DataFrame(summary["by_sku"])),
              _table("Noisiest benchmark groups", pl.DataFrame(summary["noisiest"])
                     .drop("test_suite"), 10)]
    drift = pl.DataFrame(summary["drift"])
    if drift.height:
        tables.append(_table("Largest drift of long-observed VMs (relative change per day)",
                             drift.drop("test_suite"), 10))
    var = vm_noise.variability(store, trace)
    figs = [("Variability per benchmark group", plots.vm_variability(var)),
            ("Coefficient of variation per group", plots.histogram(
                var["cv"].to_numpy(), "CV of runs per benchmark group", "CV"))]
    top = var.sort("runs", descending=True).item(0, "test_name")
    figs.append((f"Daily median of {top}", plots.series_lines(
        vm_noise.vm_series(store, trace, top).with_columns(
            pl.concat_str("vm_sku", "vm_lifespan", separator=" / ").alias("series")),
        f"Daily median: {top[:60]}", "value")))
    return keys, tables, figs


def write_report(store: Store, trace: str, out_dir: str | Path,
                 slo: dict[str, float] | None = None) -> Path:
    """Write `<out_dir>/<trace>.html` and `<out_dir>/summary.json`; returns the HTML path.
    `slo`: latency limits (metric column -> s) for the SLO attainment and goodput views."""
    kind = trace_kind(store, trace)
    summary = characterize(store, trace, slo=slo)
    build = {"llm": _llm, "cluster": _cluster, "vm": _vm}[kind]
    keys, tables, figs = build(store, trace, summary)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary_json = json.dumps(summary, indent=1, default=str)
    (out / "summary.json").write_text(summary_json)
    env = jinja2.Environment(loader=jinja2.PackageLoader("servecast.analytics", "templates"),
                             autoescape=True)
    try:
        version = metadata.version("servecast")
    except metadata.PackageNotFoundError:
        version = "dev"
    html = env.get_template(TEMPLATE).render(
        trace=trace, kind=kind, info=store.trace_info(trace), version=version,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
        key_numbers=[(k, fmt(v)) for k, v in keys], tables=tables,
        figures=[{"title": t, "png": _png(f)} for t, f in figs], summary_json=summary_json)
    path = out / f"{trace}.html"
    path.write_text(html, encoding="utf-8")
    return path
