"""The main job on the shared real data: ingest every dataset, then (as the other areas land)
characterize, train every predictor with fast settings, and write the report and model dir."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from servecast.store import Store


def ingest_shared(store: Store, data: Path | None, log: Callable[[str], None]) -> None:
    """Ingest every dataset of the shared folder (already-ingested files are skipped)."""
    from servecast.datasets.catalog import SHARED, shared_path

    for source, rel, trace in SHARED:
        t0 = time.perf_counter()
        r = store.ingest(source, [shared_path(rel, data)], trace=trace)
        what = "already in the store" if not r.rows and r.skipped else (
            f"{r.rows:,} rows, {r.rejected:,} rejected")
        log(f"  {trace:<24} {source:<18} {what}  ({time.perf_counter() - t0:.1f} s)")


def run_demo(db: Path | None = None, data: Path | None = None, out: Path = Path("out"),
             log: Callable[[str], None] = print) -> Store:
    """Run every demo step; returns the open store."""
    store = Store(db)
    out.mkdir(parents=True, exist_ok=True)
    log(f"[1] ingest the shared datasets into {store.path}")
    ingest_shared(store, data, log)
    from servecast.analytics.report import write_report

    report = write_report(store, "azure_conv", out / "report")
    log(f"[2] characterization report: {report.resolve()}")
    log(f"    next: servecast dashboard --db {store.path}   |   "
        f"servecast serve --models {out / 'models'}")
    return store
