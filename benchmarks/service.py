"""HTTP estimate service load test: output-length estimates over loopback keep-alive
connections against a real `servecast serve` process.

Target (issue 8): >= 1,000 requests/s and p99 <= 20 ms on a 2-core machine. Prints
throughput and latency quantiles next to the baseline of calling the Estimator in-process.

    .venv/bin/python benchmarks/service.py [--models DIR] [--requests 2000] [--connections 4]

Without --models it ingests the Azure conversation trace into a temporary store and trains
the metadata output-length model with fast settings first. The load generator runs on the
same machine as the server, so both share the cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _tools.loadtest import post_load
from _tools.localserver import estimate_service

from servecast.config import data_dir

BODY = {"prompt_tokens": 512}


def build_models(folder: Path) -> Path:
    """Train the fast metadata output-length model on azure_conv into `folder`/output_length."""
    from servecast.predictors.output_length.train import train_output_length
    from servecast.store import Store

    with Store(folder / "bench.duckdb") as store:
        conv = data_dir() / "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
        store.ingest("azure-llm", [conv], trace="azure_conv")
        train_output_length(store, "azure_conv", folder / "models" / "output_length", fast=True)
    return folder / "models"


def in_process_us(models: Path, n: int = 20_000) -> tuple[float, float]:
    """p50, p99 (µs) of `Estimator.output_length` called directly (the no-HTTP baseline)."""
    from servecast.estimator import Estimator

    est = Estimator.load(models)
    est.output_length(**BODY)
    lat = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        est.output_length(**BODY)
        lat[i] = time.perf_counter() - t0
    return float(np.quantile(lat, 0.5) * 1e6), float(np.quantile(lat, 0.99) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="models dir with an output_length model")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100, help="items per request, batch run")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or build_models(Path(tmp))
        base_p50, base_p99 = in_process_us(models)
        with estimate_service(models) as url:
            single = post_load(f"{url}/v1/output-length", BODY, args.requests, args.connections)
            batch_body = {"items": [{"prompt_tokens": 16 * (i + 1)} for i in range(args.batch)]}
            batch = post_load(f"{url}/v1/output-length", batch_body,
                              max(args.requests // 10, 20), args.connections)

    ok = "met" if single.throughput >= 1000 and single.quantile_ms(0.99) <= 20 else "NOT met"
    print(f"in-process Estimator.output_length (baseline): p50 {base_p50:.1f} µs, "
          f"p99 {base_p99:.1f} µs")
    print(f"HTTP single: {single.requests} requests over {args.connections} keep-alive "
          f"connections, errors {single.errors}")
    print(f"  throughput {single.throughput:,.0f} req/s   p50 {single.quantile_ms(0.5):.2f} ms"
          f"   p99 {single.quantile_ms(0.99):.2f} ms   (target >= 1,000 req/s, p99 <= 20 ms: "
          f"{ok})")
    print(f"  HTTP p50 / in-process p50 = {single.quantile_ms(0.5) * 1e3 / base_p50:,.0f}x")
    print(f"HTTP batch of {args.batch}: {batch.throughput * args.batch:,.0f} estimates/s, "
          f"p99 {batch.quantile_ms(0.99):.2f} ms per request, errors {batch.errors}")


if __name__ == "__main__":
    main()
