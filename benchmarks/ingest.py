"""Ingest speed and memory: `servecast ingest burstgpt` vs bare DuckDB vs pandas.

Writes a synthetic 2,000,000-row BurstGPT-v1 CSV (bursty Gamma inter-arrivals, bounded
Zipf-like request/response lengths, ~1.5% failures with 0 response tokens, ChatGPT/GPT-4,
Conversation/API log) into a temp folder, then times, interleaved and repeated:

- servecast: the real CLI, `servecast ingest burstgpt FILE --db X` (validation, rejected rows,
  sha256 manifest, one transaction);
- bare:      `CREATE TABLE t AS SELECT * FROM read_csv(FILE)` into a DuckDB file;
- pandas:    `pandas.read_csv(FILE)` then `CREATE TABLE t AS SELECT * FROM df` into a DuckDB file.

Every run is its own process (interpreter start-up included, as a user sees it); its peak RSS
comes from `os.wait4`. Prints medians (s, MB) and the ratios against the targets:
servecast/bare <= 1.5, pandas/servecast >= 5, servecast peak RSS <= 1.5 GB.

    .venv/bin/python benchmarks/ingest.py [--rows 2000000] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

HEADER = ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"]

BARE = """
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute("CREATE TABLE t AS SELECT * FROM read_csv(?)", [sys.argv[1]])
con.close()
"""

PANDAS = """
import duckdb, pandas as pd, sys
df = pd.read_csv(sys.argv[1])
con = duckdb.connect(sys.argv[2])
con.execute("CREATE TABLE t AS SELECT * FROM df")
con.close()
"""


def bounded_zipf(rng: np.random.Generator, n: int, a: float, lo: int, hi: int) -> np.ndarray:
    """n integers in [lo, hi] with P(k) ~ k^-a (inverse-CDF of a truncated power law)."""
    u = rng.random(n)
    e = 1.0 - a
    k = ((hi ** e - lo ** e) * u + lo ** e) ** (1.0 / e)
    return np.floor(k).astype(np.int64)


def write_trace(path: Path, rows: int, seed: int = 0) -> None:
    """A BurstGPT-v1 CSV with BurstGPT-like marginals (integer-second timestamps)."""
    rng = np.random.default_rng(seed)
    # bursty arrivals: Gamma inter-arrivals with shape < 1 (CV = 2), mean 2.6 s (~0.38 req/s)
    gaps = rng.gamma(shape=0.25, scale=2.6 / 0.25, size=rows)
    ts = np.floor(np.cumsum(gaps)).astype(np.int64)
    req = bounded_zipf(rng, rows, 1.15, 1, 32_000)
    resp = bounded_zipf(rng, rows, 1.05, 1, 8_000)
    resp[rng.random(rows) < 0.015] = 0  # failed requests: no response tokens
    model = np.where(rng.random(rows) < 0.8, "ChatGPT", "GPT-4")
    log = np.where(rng.random(rows) < 0.65, "Conversation log", "API log")
    pl.DataFrame({
        HEADER[0]: ts, HEADER[1]: model, HEADER[2]: req, HEADER[3]: resp,
        HEADER[4]: req + resp, HEADER[5]: log,
    }).write_csv(path)


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """Run `cmd` as a child process; (wall s, CPU s = user + system, peak RSS MB) of it."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}\n{err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0  # Linux: KiB


def commands(csv: Path, db: Path) -> dict[str, list[str]]:
    py = sys.executable
    cli = Path(py).with_name("servecast")
    servecast = [str(cli)] if cli.exists() else [py, "-m", "servecast.cli"]
    return {
        "servecast": [*servecast, "ingest", "burstgpt", str(csv), "--db", str(db)],
        "bare": [py, "-c", BARE, str(csv), str(db)],
        "pandas": [py, "-c", PANDAS, str(csv), str(db)],
    }


def check_store(db: Path, rows: int) -> None:
    """The servecast store holds every row, with the failures flagged."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    n, failed, rej = con.execute(
        "SELECT count(*), sum(failed::INT), (SELECT count(*) FROM rejected_rows) "
        "FROM llm_requests").fetchone()
    con.close()
    if n != rows or rej != 0:
        raise SystemExit(f"servecast stored {n} rows ({rej} rejected), expected {rows}")
    print(f"check: servecast stored {n:,} rows, {failed:,} failed ({failed / n:.2%}), 0 rejected")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the CSV in")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="servecast-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / f"BurstGPT_synthetic_{args.rows}.csv"
        if not csv.exists():
            t0 = time.perf_counter()
            write_trace(csv, args.rows)
            print(f"wrote {csv} ({csv.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows) "
                  f"in {time.perf_counter() - t0:.1f} s")
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        rss: dict[str, list[float]] = {}
        for rep in range(args.repeats):
            for name in ("servecast", "bare", "pandas"):
                db = Path(tmp) / f"{name}-{rep}.duckdb"
                wall, cpu_s, peak = run_measured(commands(csv, db)[name])
                if name == "servecast" and rep == 0:
                    check_store(db, args.rows)
                db.unlink()
                times.setdefault(name, []).append(wall)
                cpu.setdefault(name, []).append(cpu_s)
                rss.setdefault(name, []).append(peak)
                print(f"  run {rep + 1} {name:<9} {wall:6.2f} s wall {cpu_s:6.2f} s CPU  "
                      f"peak RSS {peak:5.0f} MB", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    peak = {k: max(v) for k, v in rss.items()}
    load = os.getloadavg()[0]
    print(f"\n{args.rows:,} rows, median of {args.repeats} interleaved runs "
          f"(each a fresh process; {os.cpu_count()} CPUs, load average {load:.1f})")
    print(f"{'method':<10} {'wall s':>8} {'min s':>7} {'CPU s':>7} {'peak RSS MB':>12}")
    for k in med:
        print(f"{k:<10} {med[k]:8.2f} {min(times[k]):7.2f} {med_cpu[k]:7.2f} {peak[k]:12.0f}")
    print(f"CPU-time ratios (robust to other load): servecast/bare = "
          f"{med_cpu['servecast'] / med_cpu['bare']:.2f}x, pandas/servecast = "
          f"{med_cpu['pandas'] / med_cpu['servecast']:.2f}x")
    r_bare = med["servecast"] / med["bare"]
    r_pandas = med["pandas"] / med["servecast"]
    print(f"\nservecast / bare DuckDB   = {r_bare:.2f}x   (target <= 1.5)  "
          f"{'met' if r_bare <= 1.5 else 'NOT met'}")
    print(f"pandas / servecast        = {r_pandas:.2f}x   (target >= 5)    "
          f"{'met' if r_pandas >= 5 else 'NOT met'}")
    print(f"servecast peak RSS        = {peak['servecast'] / 1024:.2f} GB (target <= 1.5)  "
          f"{'met' if peak['servecast'] <= 1536 else 'NOT met'}")


if __name__ == "__main__":
    main()
