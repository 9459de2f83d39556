"""Where the MLPerf mean-TPOT gap comes from: Little's law on one development Server row per
model x GPU (issue 24).

Measured mean decode concurrency per replica C = QPS / replicas x mean output tokens x mean
TPOT (Little's law). Beside it: the simulator's mean TPOT and concurrency at the same QPS,
its decode-only iteration time at C sequences of mean context (prompt + output / 2) and
how many requests of mean length its KV cache holds, with the deployment of
`servecast.simulator.mlperf` (its fp8 KV rule, or `--kv-cache-dtype auto` to switch it off)
and the efficiency factors given (those `capacity_mlperf.py` fitted).

With `--beams N`, instead, the GPT-J Offline rows (one per GPU): MLPerf's GPT-J decodes N
beams per sample (`num_beams`); the simulated samples/s with one sequence per sample, with N
sequences whose prompt is shared (beams 2..N as 1-token prompts: their KV and prefill are
the first's, but their attention then reads too little context, so this bounds the
throughput from above) and with N full copies (prompt computed and held N times: a bound
from below), beside the measured.

    .venv/bin/python benchmarks/mlperf_tpot_gap.py --efficiency trtllm=F vllm=F
        [--kv-cache-dtype auto] [--requests 800] [--beams 4]
"""

from __future__ import annotations

import argparse

import numpy as np
from capacity_mlperf import load_rows, split

from servecast.simulator import search
from servecast.simulator.deployment import Deployment
from servecast.simulator.mlperf import MAX_SEQS, model_row
from servecast.simulator.workloads import lengths, poisson_arrivals


def row_gap(r: dict, m: dict, eff: float, kv: str | None, n: int) -> dict:
    """The Little's-law numbers of one Server row (module doc); times in ms."""
    c = search.compile_replica(Deployment(
        model=m["model"], gpu=m["gpu"], tp=m["tp"], dtype=m["dtype"], engine=m["engine"],
        max_num_seqs=MAX_SEQS, efficiency=eff, kv_cache_dtype=kv or m["kv_cache_dtype"]))
    prompt, output = lengths(m["workload"], n, seed=0)
    q = r["target_qps"] / m["replicas"]
    conc = q * output.mean() * r["mean_tpot_ms"] / 1e3
    ctx = prompt.mean() + output.mean() / 2
    res = search.run(c, poisson_arrivals(n, q, 0), prompt, output)
    tpot = float(np.nanmean(res["tpot_s"])) * 1e3
    return {"qps_per_replica": q, "measured_tpot": r["mean_tpot_ms"], "measured_conc": conc,
            "sim_tpot": tpot, "sim_conc": q * output.mean() * tpot / 1e3,
            "sim_step_at_measured_conc": float(c.decode_ms(int(round(conc)),
                                                           np.array([ctx]))[0]),
            "kv_requests": c.kv_blocks * c.deployment.block_size / (prompt.mean()
                                                                     + output.mean())}


def beams_table(rows: list[dict], eff: dict, beams: int, n: int) -> None:
    """The `--beams` table (module doc): samples/s and error vs the measured."""
    print("| GPU | engine x replicas | measured samples/s | 1 sequence | "
          f"{beams} beams, prompt shared | {beams} full copies |")
    print("|---|---|---|---|---|---|")
    seen = set()
    for r in rows:
        m = model_row(r)
        if r["scenario"] != "Offline" or not r["benchmark"].startswith("gptj") \
                or m["reason"] or m["gpu"] in seen:
            continue
        seen.add(m["gpu"])
        c = search.compile_replica(Deployment(
            model=m["model"], gpu=m["gpu"], tp=m["tp"], dtype=m["dtype"], engine=m["engine"],
            max_num_seqs=MAX_SEQS, efficiency=eff.get(m["engine"], 1.0),
            kv_cache_dtype=m["kv_cache_dtype"]))
        prompt, output = lengths(m["workload"], n, seed=0)
        shared = np.concatenate([prompt, np.ones((beams - 1) * n, np.int64)])
        got = [n / search.run(c, np.zeros(len(p)), p, np.tile(output, len(p) // n))[
            "makespan_s"] * m["replicas"] for p in (prompt, shared, np.tile(prompt, beams))]
        meas = r["samples_per_s"]
        print(f"| {m['gpu']} | {m['engine']} x {m['replicas']} | {meas:.1f} | " + " | ".join(
            f"{g:.1f} ({100 * (g / meas - 1):+.0f}%)" for g in got) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--efficiency", nargs="+", required=True, metavar="FAMILY=F")
    ap.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default=None)
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--beams", type=int, default=0, help="the GPT-J Offline beams table")
    args = ap.parse_args()
    eff = {k: float(v) for k, _, v in (e.partition("=") for e in args.efficiency)}
    rows = load_rows()
    split(rows)
    if args.beams:
        beams_table(rows, eff, args.beams, args.requests)
        return
    seen = set()
    print("| model | GPU | engine | TP x replicas | QPS / replica | measured TPOT / C | "
          "simulated TPOT / C | sim step at measured C | KV holds (requests) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = model_row(r)
        if r["scenario"] != "Server" or m["reason"] or r["split"] != "dev" \
                or (m["model"], m["gpu"]) in seen:
            continue
        seen.add((m["model"], m["gpu"]))
        g = row_gap(r, m, eff.get(m["engine"], 1.0), args.kv_cache_dtype, args.requests)
        print(f"| {m['model']} | {m['gpu']} | {m['engine']} | {m['tp']} x {m['replicas']} | "
              f"{g['qps_per_replica']:.2f} | {g['measured_tpot']:.0f} / "
              f"{g['measured_conc']:.0f} | {g['sim_tpot']:.0f} / {g['sim_conc']:.0f} | "
              f"{g['sim_step_at_measured_conc']:.0f} | {g['kv_requests']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
