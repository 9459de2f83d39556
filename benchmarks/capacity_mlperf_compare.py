"""Compare `capacity_mlperf.py --out` runs row by row (issue 24): which groups a change moves.

Per run: its step model, efficiency factors, median |error| per split and the Server rows
of `--rows` whose mean TPOT is within TARGET (the issue's bar). Per benchmark
(accuracy suffix dropped) x GPU x scenario, over the rows of `--rows` that every run
predicted: the signed median error % of each run (Server: max QPS / mean TPOT at the
submitted QPS; Offline: throughput) and, for Server rows, the measured mean decode
concurrency per replica by Little's law (submitted QPS / replicas x the workload's mean
output tokens x measured mean TPOT: the batch a replica ran at). Then each later run against
the first on the Server rows' mean TPOT: rows whose |error| shrank / grew, and the
difference of the median |error| (points) with a row-bootstrap 90% interval (rows resampled,
BOOT draws, seed 0; not seed noise: every run's seeds stay as they were).

    .venv/bin/python benchmarks/capacity_mlperf_compare.py BASE.json RUN.json [...]
        [--rows dev|held-out|all]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from servecast.simulator.mlperf import benchmark_key
from servecast.simulator.workloads import lengths

#: the issue's bar on a row's |error|
TARGET = 0.15
#: bootstrap draws of the median-difference interval
BOOT = 2000
#: samples of a workload's lengths for its mean output
SAMPLES = 20000


def load(path: Path, rows: str) -> dict:
    """One `--out` file with `rows` kept: its modelled rows of that split (all: both) that
    carry an error (predicted in that run)."""
    run = json.loads(path.read_text())
    run["rows"] = [r for r in run["rows"] if not r.get("reason")
                   and rows in ("all", r["split"])
                   and (r.get("err_tpot") is not None or r.get("err_offline") is not None)]
    return run


def group(r: dict) -> tuple[str, str, str]:
    """(benchmark without its accuracy suffix, GPU, scenario)."""
    return benchmark_key(r["benchmark"]), r["gpu"], r["scenario"]


def concurrency(r: dict, mean_output: dict[str, float]) -> float:
    """Measured mean decode sequences per replica of a Server row (Little's law, module
    doc); `mean_output` caches each workload's mean output tokens."""
    if r["workload"] not in mean_output:
        mean_output[r["workload"]] = float(lengths(r["workload"], SAMPLES, seed=0)[1].mean())
    return r["target_qps"] / r["replicas"] * mean_output[r["workload"]] * r["mean_tpot_ms"] / 1e3


def signed(rs: list[dict], key: str) -> str:
    return f"{100 * np.median([r[key] for r in rs]):+.1f}"


def group_table(names: list[str], runs: list[dict]) -> list[str]:
    """Markdown rows: per group, each run's signed median errors (module doc)."""
    out = ["| benchmark / GPU / scenario | rows | measured concurrency per replica | "
           + " | ".join(f"{n}: QPS / TPOT %" for n in names) + " |",
           "|---|---|---|" + "---|" * len(runs)]
    groups: dict[tuple, list[list[dict]]] = {}
    for i, run in enumerate(runs):
        for r in run["rows"]:
            groups.setdefault(group(r), [[] for _ in runs])[i].append(r)
    mean_output: dict[str, float] = {}
    for g, per_run in sorted(groups.items()):
        base = per_run[0]
        if g[2] == "Server":
            c = f"{np.median([concurrency(r, mean_output) for r in base]):.0f}"
            cells = [f"{signed(rs, 'err_qps')} / {signed(rs, 'err_tpot')}" if rs else "-"
                     for rs in per_run]
        else:
            c = "-"
            cells = [f"Offline {signed(rs, 'err_offline')}" if rs else "-" for rs in per_run]
        out.append(f"| {' / '.join(g)} | {len(base)} | {c} | " + " | ".join(cells) + " |")
    return out


def paired(base: list[dict], other: list[dict]) -> str:
    """Mean TPOT |error| of `other` against `base`, row by row (same rows, same order)."""
    a = np.array([abs(r["err_tpot"]) for r in base])
    b = np.array([abs(r["err_tpot"]) for r in other])
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(a), len(a)) for _ in range(BOOT)]
    diff = [np.median(b[i]) - np.median(a[i]) for i in draws]
    lo, hi = np.percentile(diff, [5, 95]) * 100
    return (f"{(b < a).sum()} rows better, {(b > a).sum()} worse; median |error| "
            f"{100 * (np.median(b) - np.median(a)):+.1f} points (bootstrap 90% "
            f"{lo:+.1f} to {hi:+.1f})")


def within(rows: list[dict]) -> int:
    """Rows whose mean TPOT |error| is at most TARGET."""
    return sum(abs(r["err_tpot"]) <= TARGET for r in rows)


def server(run: dict) -> list[dict]:
    return [r for r in run["rows"] if r.get("err_tpot") is not None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="--out files; the first is the base")
    ap.add_argument("--rows", choices=("dev", "held-out", "all"), default="dev")
    args = ap.parse_args(argv)
    runs = [load(p, args.rows) for p in args.runs]
    names = [p.stem for p in args.runs]
    keys = [[(r["benchmark"], r["scenario"], r["submitter"], r["system"], r["target_qps"])
             for r in server(run)] for run in runs]
    if any(k != keys[0] for k in keys):
        sys.exit("the runs predicted different Server rows: compare runs of the same --rows")
    for name, run in zip(names, runs, strict=True):
        model = run.get("step_model")
        print(f"{name}: step time {model['path'] if model else 'physics only'}; efficiency "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(run["efficiency"].items()))
              + "; median |error| % (rows) " + "; ".join(
                  f"{part}: " + ", ".join(f"{k} {v:.1f} ({n})" for k, (v, n) in m.items()
                                           if v is not None)
                  for part, m in run["medians"].items()
                  if part != "all" and any(v is not None for v, _ in m.values()))
              + f"; mean TPOT within {TARGET:.0%}: {within(server(run))} of {len(server(run))}")
    print("\n" + "\n".join(group_table(names, runs)))
    for name, run in zip(names[1:], runs[1:], strict=True):
        print(f"\n{name} against {names[0]}, mean TPOT at the submitted QPS: "
              + paired(server(runs[0]), server(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
