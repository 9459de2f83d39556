"""Ingest at the scale of the published Azure LLM inference week (2024): 44 million rows.

Writes an Azure-2024-shaped CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps with
microseconds and a UTC offset over one week with a daily rate cycle, lognormal context and
generated lengths) by DuckDB's COPY from `range(N)`: streamed, never held in memory. Then
times each run in its own process, with its peak RSS from `os.wait4` (the CSV is written by
a child process too: a forked child's peak RSS starts at its parent's):

- servecast: `servecast ingest azure-llm FILE --db X` (sha256 + record count in a thread;
  one statement, on every thread: the typed reader with the timestamp parse and the row
  checks into a new one-pass part of `llm_requests` in file order, numbered by its row ids
  in the view; manifest; one transaction);
- bare:      `CREATE TABLE t AS SELECT * FROM read_csv(FILE)` into a DuckDB file.

With `--breakdown`, also the steps on their own, each in its own process: the scan
(`scan_file`: sha256 + record count), the typed read with the timestamp parse and nothing
stored, and `Store.ingest` without the CLI around it.

Targets: servecast / bare <= 1.5 and servecast peak RSS <= 2 GB.

    .venv/bin/python benchmarks/ingest_44m.py [--rows 44000000] [--repeats 1] [--keep DIR]
        [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from ingest import BARE, run_measured

#: the 2024 week of the published trace (Azure LLM inference trace 2024 starts 2024-05-10)
WEEK_START = "2024-05-10 00:00:00+00"


def write_trace(path: Path, rows: int, seed: float = 0.25) -> None:
    """`rows` requests in time order over one week: arrival i sits at a warped position
    u - a sin(2 pi 7 u) / (2 pi 7) of the week (u = (i + jitter) / rows, increasing in i,
    so no sort: COPY streams range(N) in order), a daily rate cycle between 1 - a and
    1 + a; ContextTokens / GeneratedTokens lognormal (Box-Muller on DuckDB's random())."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SELECT setseed(?)", [seed])
    week_us = 7 * 86400 * 1_000_000
    con.execute(f"""
        COPY (
            SELECT strftime(TIMESTAMPTZ '{WEEK_START}' + to_microseconds(CAST(
                       {week_us} * (u - 0.5 * sin(2 * pi() * 7 * u) / (2 * pi() * 7))
                       AS BIGINT)), '%Y-%m-%d %H:%M:%S.%f+00:00') AS TIMESTAMP,
                   greatest(1, round(exp(6.9 + 1.1 * z1)))::BIGINT AS ContextTokens,
                   greatest(1, round(exp(4.6 + 1.0 * z2)))::BIGINT AS GeneratedTokens
            FROM (SELECT (i + 0.999 * random()) / {rows} AS u,
                         sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z1,
                         sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z2
                  FROM range({rows}) r(i))
        ) TO '{path}' (HEADER, DELIMITER ',')""")
    con.close()


#: the steps of `--breakdown`: name -> Python run in a child with argv [FILE, DB]
STEPS = {
    "scan": "import sys; from pathlib import Path; from servecast.datasets.scan import "
            "scan_file; scan_file(Path(sys.argv[1]))",
    "read": "import sys, duckdb; from servecast.datasets.azure_llm import DIRECT; "
            "from servecast.datasets.staging import csv_reader; con = duckdb.connect(); "
            "con.execute(\"SET TimeZone = 'UTC'\"); con.execute('SELECT max(epoch(ts)), "
            "max(context_tokens), max(generated_tokens) FROM ' + csv_reader(DIRECT), "
            "[sys.argv[1]]).fetchall()",
    "Store.ingest": "import sys; from servecast.store import Store; "
                    "Store(sys.argv[2]).ingest('azure-llm', sys.argv[1])",
}


def check_store(db: Path, rows: int) -> None:
    """The servecast store holds every row, none rejected, arrivals spanning the week."""
    con = duckdb.connect(str(db), read_only=True)
    n, rej, span = con.execute(
        "SELECT count(*), (SELECT count(*) FROM rejected_rows), max(arrival_s) "
        "FROM llm_requests").fetchall()[0]
    con.close()
    if n != rows or rej:
        raise SystemExit(f"servecast stored {n:,} rows ({rej:,} rejected), expected {rows:,}")
    print(f"check: servecast stored {n:,} rows, 0 rejected, arrivals over {span / 86400:.2f} "
          "days")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=44_000_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the CSV in")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the scan, the typed read and Store.ingest on their own")
    ap.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        write_trace(args.write, args.rows)
        return
    py = sys.executable
    cli = Path(py).with_name("servecast")
    servecast = [str(cli)] if cli.exists() else [py, "-m", "servecast.cli"]

    with tempfile.TemporaryDirectory(prefix="servecast-44m-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / f"AzureLLMInferenceTrace_2024_synthetic_{args.rows}.csv"
        if not csv.exists():  # in a child: this process's RSS would count in the runs' peaks
            t0 = time.perf_counter()
            run_measured([py, __file__, "--write", str(csv), "--rows", str(args.rows)])
            print(f"wrote {csv} ({csv.stat().st_size / 1e9:.2f} GB, {args.rows:,} rows) in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        runs: dict[str, list[tuple[float, float, float]]] = {}
        names = ["bare", "servecast", *(STEPS if args.breakdown else ())]
        for rep in range(args.repeats):
            for name in names:
                db = Path(tmp) / f"{name}-{rep}.duckdb"
                cmd = ([py, "-c", BARE, str(csv), str(db)] if name == "bare" else
                       [*servecast, "ingest", "azure-llm", str(csv), "--db", str(db)]
                       if name == "servecast" else [py, "-c", STEPS[name], str(csv), str(db)])
                wall, cpu, peak = run_measured(cmd)
                if name == "servecast" and rep == 0:
                    check_store(db, args.rows)
                db.unlink(missing_ok=True)
                runs.setdefault(name, []).append((wall, cpu, peak))
                print(f"  run {rep + 1} {name:<12} {wall:7.1f} s wall {cpu:7.1f} s CPU  peak "
                      f"RSS {peak:6.0f} MB", flush=True)

    med = {k: statistics.median(w for w, _, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c, _ in v) for k, v in runs.items()}
    peak = {k: max(p for _, _, p in v) for k, v in runs.items()}
    print(f"\n{args.rows:,} rows, median of {args.repeats} run(s) ({os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f})")
    for k in med:
        print(f"{k:<12} {med[k]:8.1f} s wall {cpu[k]:8.1f} s CPU {peak[k]:8.0f} MB peak RSS")
    ratio = med["servecast"] / med["bare"]
    print(f"servecast / bare DuckDB = {ratio:.2f}x wall, "
          f"{cpu['servecast'] / cpu['bare']:.2f}x CPU (target <= 1.5)  "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")
    print(f"servecast peak RSS      = {peak['servecast'] / 1024:.2f} GB (target <= 2)  "
          f"{'met' if peak['servecast'] <= 2048 else 'NOT met'}")


if __name__ == "__main__":
    main()
