"""One-call characterization of a trace: a JSON-ready summary chosen by the trace's kind.

kind "llm" (llm_requests), "cluster" (cluster_jobs / cluster_series / cluster_nodes) or
"vm" (vm_measurements). Units: seconds, tokens, requests per second.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from servecast.analytics import arrivals, failures, latency, lengths, prefix_cache, sessions
from servecast.analytics.fits import fit_all
from servecast.analytics.source import source
from servecast.errors import InvalidInputError, UnknownNameError
from servecast.store import Store

KINDS = {"llm_requests": "llm", "cluster_jobs": "cluster", "cluster_series": "cluster",
         "cluster_nodes": "cluster", "vm_measurements": "vm"}


def trace_kind(store: Store, trace: str) -> str:
    """"llm", "cluster" or "vm" (UnknownNameError for other tables)."""
    store.con.complete()
    table = store.table_of(trace)
    if table not in KINDS:
        raise UnknownNameError(
            f"trace {trace!r} holds {table} rows; characterization covers LLM request, "
            "cluster and VM traces (kernel/MoE data feed the predictors instead)")
    return KINDS[table]


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, frames -> lists of records, numpy scalars -> python."""
    if isinstance(obj, pl.DataFrame):
        return clean(obj.to_dicts())
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def latency_window(span_s: float) -> float:
    """Window (s) of the latency-over-time views: 1 min up to 6 h of trace, else 1 h."""
    return 60.0 if span_s <= 6 * 3600 else 3600.0


def _latency(s, slo: dict[str, float] | None) -> dict | None:
    metrics = latency.latency_metrics(s)
    if not metrics:
        if slo:
            raise InvalidInputError(
                f"{s.name}: has no latency columns (ttft_s, tpot_s, elapsed_s, queue_s), so "
                "an SLO cannot be checked; ingest logs with latencies (user-log, benchmark "
                "results) or drop --slo")
        return None
    span = s.scalar("SELECT max(arrival_s) - min(arrival_s) FROM t") or 0.0
    b = latency_window(span)
    out = {"metrics": metrics, "window_s": b, "overall": latency.latency_percentiles(s),
           "windows": latency.latency_percentiles(s, bin_s=b),
           "vs_rate": latency.latency_vs_load(s, load="rate", bin_s=b)}
    if "elapsed_s" in metrics:
        out["vs_concurrency"] = latency.latency_vs_load(s, load="concurrency")
    if slo:
        out["slo"] = {"limits_s": slo,
                      "overall": latency.slo_attainment(s, slo=slo).row(0, named=True),
                      "windows": latency.slo_attainment(s, slo=slo, bin_s=b)}
    return out


def characterize_llm(store: Store, trace: str, sample: int = 200_000,
                     slo: dict[str, float] | None = None) -> dict:
    """Summary of an LLM request trace: arrivals (burstiness overall and per segment,
    timestamp quantization, inter-arrival fits, daily / weekly patterns when the span has
    2 days / 2 weeks), lengths (quantiles, tails, bimodality, conditional output,
    correlations, per model / log type when there are several), failures, sessions and
    prefix reuse where the trace has them. Quantized timestamps: no fits, and `warnings`
    says why. With latency columns: `latency` (percentiles overall, per window and against
    load; SLO attainment and goodput for the `slo` limits, metric column -> s)."""
    s = source(store, trace, "llm_requests")
    out: dict[str, Any] = {"trace": trace, "kind": "llm",
                           "requests": s.scalar("SELECT count(*) FROM t")}
    if s.has_values("arrival_s"):
        gaps = arrivals.interarrival_sample(s, n=sample)  # one sample for both
        quant = arrivals.gap_quantization(gaps)
        # a continuous fit to tied timestamps would mislead
        fits = fit_all(np.empty(0) if quant["quantized"] else gaps)
        out["arrivals"] = {
            "overall": arrivals.burstiness(s).row(0, named=True),
            "segments": arrivals.burstiness(s, by_segment=True),
            "quantization": quant,
            "interarrival_fits": fits,
            "best_fit_ks": fits.sort("ks").item(0, "family") if fits.height else None,
            "best_fit_aic": fits.sort("aic").item(0, "family") if fits.height else None,
        }
        if quant["quantized"]:
            out.setdefault("warnings", []).append(quant["message"])
        span = out["arrivals"]["overall"]["span_s"] or 0.0
        out["arrivals"]["patterns"] = {
            period: arrivals.periodic_profile(s, period=period)
            for period, need in (("day", 2 * 86400), ("week", 14 * 86400)) if span >= need}
        out["failures"] = {**failures.failure_summary(s),
                           "load_correlation_60s": failures.failure_load_correlation(s)}
    out["lengths"] = {
        "quantiles": lengths.length_quantiles(s),
        "prompt_tail": lengths.zipf_tail(s, field="prompt_tokens"),
        "output_tail": lengths.zipf_tail(s, field="output_tokens"),
        "prompt_bimodality": lengths.bimodality(s, field="prompt_tokens"),
        "output_bimodality": lengths.bimodality(s, field="output_tokens"),
        "conditional_output": lengths.conditional_output(s),
        "correlations": lengths.correlations(s),
    }
    for by in ("model", "log_type"):
        if s.scalar(f"SELECT count(DISTINCT {by}) FROM t") > 1:
            out["lengths"][f"by_{by}"] = lengths.length_quantiles_by(s, by=by)
    lat = _latency(s, slo)
    if lat:
        out["latency"] = lat
    if s.has_values("session_id"):
        out["sessions"] = sessions.session_summary(s)
    if s.has_values("prefix_hashes"):
        out["prefix_reuse"] = {**prefix_cache.prefix_reuse(s),
                               "lru": prefix_cache.lru_hit_ratios(s)}
    return clean(out)


def characterize(store: Store, trace: str, slo: dict[str, float] | None = None) -> dict:
    """JSON-ready summary of `trace`, by kind (see module docstring); `slo` (LLM traces
    with latencies): metric column -> limit in s, see `latency.slo_attainment`."""
    kind = trace_kind(store, trace)
    if kind == "llm":
        return characterize_llm(store, trace, slo=slo)
    if slo:
        raise InvalidInputError(f"trace {trace!r} holds {kind} data; --slo applies to LLM "
                                "request traces with latencies")
    if kind == "cluster":
        from servecast.analytics.cluster import characterize_cluster

        return clean(characterize_cluster(store, trace))
    from servecast.analytics.vm_noise import characterize_vm

    return clean(characterize_vm(store, trace))
