"""The main job on the shared real data with fast settings: ingest every dataset, characterize
and report, train every predictor into one models dir, and print where everything went.

Layout of `out/`: `report/` (HTML + summary.json), `models/<kind>/` (what `Estimator.load`
and `servecast serve --models` read), and per-area working folders (`interference/`, `moe/`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from servecast.store import Store

#: the LLM trace the demo reports on and trains the output-length model on
DEMO_TRACE = "azure_conv"


def ingest_shared(store: Store, data: Path | None, log: Callable[[str], None]) -> None:
    """Ingest every dataset of the shared folder (already-ingested files are skipped)."""
    from servecast.datasets.catalog import SHARED, shared_path

    for source, rel, trace in SHARED:
        t0 = time.perf_counter()
        r = store.ingest(source, [shared_path(rel, data)], trace=trace)
        what = "already in the store" if not r.rows and r.skipped else (
            f"{r.rows:,} rows, {r.rejected:,} rejected")
        log(f"  {trace:<24} {source:<18} {what}  ({time.perf_counter() - t0:.1f} s)")


def train_output_length(store: Store, models: Path, log) -> pl.DataFrame:
    """Metadata output-length model on DEMO_TRACE -> models/output_length; its summary."""
    from servecast.predictors.output_length.train import summary, train_output_length

    result = train_output_length(store, DEMO_TRACE, models / "output_length", fast=True)
    log(f"    output length: trained in {result['seconds']:.1f} s ({result['split']})")
    return summary(result)


def train_kernel_latency(store: Store, models: Path, log) -> pl.DataFrame:
    """Cross-device kernel model and the NAS-Bench-201 model -> models/."""
    from servecast.predictors.kernel_latency.demo import demo_kernel_latency

    return demo_kernel_latency(store, models, log=log)


def train_interference(store: Store, models: Path, out: Path, log) -> pl.DataFrame:
    """Both Azure VM-noise tasks at reduced size; the fingerprint dual-branch model is the one
    served (models/interference)."""
    from servecast.predictors.interference.demo import run_interference_demo

    table = run_interference_demo(store, out, log=log)  # saves under out/interference/
    _publish(out / "interference" / "fingerprint" / "dual",
             models / "interference")
    return table


def train_moe(store: Store, models: Path, out: Path, log) -> pl.DataFrame:
    """OLMoE imbalance + a tiny small-MoE run with its gamma_eff model -> models/."""
    from servecast.moe_demo import moe_demo

    res = moe_demo(store, out=out / "moe", log=log)
    _publish(out / "moe" / "models" / "moe_congestion", models / "moe_congestion")
    return res.get("transfer", res["trajectory"])


def _publish(src: Path, dst: Path) -> None:
    """Copy one saved predictor into the models dir (replacing an older one)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def run_demo(db: Path | None = None, data: Path | None = None, out: Path = Path("out"),
             log: Callable[[str], None] = print,
             show: Callable[[pl.DataFrame, str], None] | None = None) -> Store:
    """Run every demo step (`show(frame, title)` prints a result table); returns the store."""
    from servecast.analytics.report import write_report

    show = show or (lambda df, title: log(f"{title}\n{df}"))
    store = Store(db)
    out.mkdir(parents=True, exist_ok=True)
    models = out / "models"
    started = time.perf_counter()
    log(f"[1/6] ingest the shared datasets into {store.path}")
    ingest_shared(store, data, log)
    show(store.traces().select("trace", "source", "files", "rows", "rejected"),
         "traces in the store")
    log(f"[2/6] characterize {DEMO_TRACE} and write its report")
    report = write_report(store, DEMO_TRACE, out / "report")
    steps = [
        ("output-length predictor", lambda: train_output_length(store, models, log)),
        ("GPU kernel-latency predictors", lambda: train_kernel_latency(store, models, log)),
        ("VM interference predictor", lambda: train_interference(store, models, out, log)),
        ("MoE gamma_eff", lambda: train_moe(store, models, out, log)),
    ]
    for i, (what, step) in enumerate(steps, start=3):
        t0 = time.perf_counter()
        log(f"[{i}/6] {what} (fast settings)")
        show(step(), f"{what} ({time.perf_counter() - t0:.0f} s)")
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    log(f"report:    {report.resolve()}")
    log(f"models:    {models.resolve()}")
    log(f"dashboard: servecast dashboard --db {store.path}")
    log(f"serve:     servecast serve --models {models}")
    return store
