"""Characterization at scale: synthetic BurstGPT-schema traces of 500k and 5M rows.

Per size, one child process writes the CSV with DuckDB and ingests it with the `burstgpt`
adapter; a second, fresh child times `characterize()` (the full LLM summary: burstiness
overall and per model x log type, four MLE inter-arrival fits, length quantiles / tails /
bimodality, conditional output, correlations, failures) and reports its own peak RSS. Prints
seconds, peak RSS and the
5M / 500k time ratio. Targets: <= 60 s and <= 2 GB at 5M, ratio <= 12 (baseline: linear
scaling would be 10).

    .venv/bin/python benchmarks/characterize.py [--sizes 500000 5000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPAN_S = 121 * 86400  # BurstGPT v1 covers ~121 days


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """BurstGPT v1 CSV: diurnal, bursty arrivals; lognormal lengths; ~5% failures."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SELECT setseed({seed / 1000})")
    mean_gap = SPAN_S / rows
    con.execute(f"""
        COPY (
          WITH g AS (
            SELECT i, -ln(1 - random()) * {mean_gap}
                      * (1 + 0.6 * sin(i * {2 * 3.14159 / rows * 121}))
                      * (CASE WHEN random() < 0.05 THEN 0.05 ELSE 1.05 END) AS gap,
                   random() AS u1, random() AS u2, random() AS u3, random() AS u4
            FROM range({rows}) r(i)),
          r AS (
            SELECT sum(gap) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING) AS ts,
                   CASE WHEN u1 < 0.7 THEN 'ChatGPT' ELSE 'GPT-4' END AS model,
                   CASE WHEN u2 < 0.8 THEN 'Conversation log' ELSE 'API log' END AS log_type,
                   greatest(1, round(exp(6 + 1.1 * sqrt(-2 * ln(u3)) * cos(6.2831853 * u4))))
                       ::BIGINT AS req,
                   u1, u2, u3, u4, i FROM g)
          SELECT round(ts)::BIGINT AS "Timestamp", model AS "Model", req AS "Request tokens",
                 CASE WHEN u2 * 20 % 1 < 0.05 THEN 0 ELSE greatest(1, round(
                     exp(5 + 0.3 * ln(req) / 6 + 0.9 * sqrt(-2 * ln(u4)) * sin(6.2831853 * u3))))
                 END::BIGINT AS "Response tokens",
                 0::BIGINT AS "Total tokens", log_type AS "Log Type"
          FROM r ORDER BY i
        ) TO '{path}' (HEADER, DELIMITER ',')""")
    con.close()


def prepare(rows: int, folder: Path) -> dict:
    """Write the CSV and ingest it into `folder`/bench.duckdb; returns timings (s)."""
    from servecast.store import Store

    csv = folder / f"burst_{rows}.csv"
    t0 = time.perf_counter()
    write_csv(csv, rows)
    t1 = time.perf_counter()
    with Store(folder / "bench.duckdb") as store:
        store.ingest("burstgpt", [csv], trace="bench")
    csv.unlink()
    return {"write_s": t1 - t0, "ingest_s": time.perf_counter() - t1}


def measure(folder: Path) -> dict:
    """Time `characterize()` on the prepared store; peak RSS (MiB) of this process."""
    from servecast.analytics.characterize import characterize
    from servecast.store import Store

    with Store(folder / "bench.duckdb", read_only=True) as store:
        t0 = time.perf_counter()
        summary = characterize(store, "bench")
        dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    o = summary["arrivals"]["overall"]
    return {"characterize_s": dt, "peak_rss_mib": rss, "cv": o["cv"],
            "best_fit_ks": summary["arrivals"]["best_fit_ks"], "requests": summary["requests"]}


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[500_000, 5_000_000])
    ap.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.prepare:
        print(json.dumps(prepare(int(args.prepare[0]), Path(args.prepare[1]))))
        return
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="servecast-bench-") as tmp:
            r = {"rows": n, **_run("--prepare", str(n), tmp), **_run("--measure", tmp)}
        results.append(r)
        print(f"{n:>10,} rows: characterize {r['characterize_s']:6.1f} s  "
              f"(ingest {r['ingest_s']:.1f} s, csv {r['write_s']:.1f} s)  "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB  cv={r['cv']:.3f} "
              f"best fit={r['best_fit_ks']}", flush=True)
    if len(results) >= 2:
        small, big = results[0], results[-1]
        ratio = big["characterize_s"] / small["characterize_s"]
        rows_ratio = big["rows"] / small["rows"]
        print(f"time ratio {big['rows']:,} / {small['rows']:,} rows = {ratio:.2f} "
              f"(linear baseline {rows_ratio:.0f}; target <= 12)")
        print(f"targets at {big['rows']:,} rows: characterize <= 60 s -> "
              f"{'met' if big['characterize_s'] <= 60 else 'NOT met'}; peak RSS <= 2048 MiB -> "
              f"{'met' if big['peak_rss_mib'] <= 2048 else 'NOT met'}")


if __name__ == "__main__":
    main()
