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
throughput from above), with N full copies (prompt computed and held N times: a bound
from below) and as the engine runs beam search (`Request.beams`: the KV the beams share
and what their attention reads, per engine family, `simulator.core`), beside the measured;
then the batch that engine run reaches (iterations between the STEADY shares of its run):
mean requests in the batch, the share of the KV blocks in use, the tokens scheduled per iteration
(budget `max_num_batched_tokens`) and the share of the iteration time that a decode-only
step of that batch would spend outside the linear layers (attention, KV-read bound).

With `--kernels`, instead, the step-time model's per-layer operator times (physics only, as
the MLPerf protocol runs it) beside NVIDIA aiconfigurator's measured vLLM tables
(`gpu/aiconfigurator/vllm/<gpu>/*/` of the shared datasets) for Llama-2-70B fp8 decode
batches on H100-SXM (TP 2) and B200 (TP 1): the four GEMMs at m = batch (the nearest
measured (n, k) scaled by n x k when the exact one is missing), decode attention of `batch`
sequences at CONTEXT tokens (or the longest measured at that batch; bf16 KV, which the
step time reads) and the two all-reduces of
batch x hidden bf16 values (`message_size` read as elements; graph-captured kernel). Times
in ms per layer; ratio = measured / step-time.

With `--steps`, instead, how the simulated replica runs at the submitted QPS of the same
rows: over the iterations that start after WARMUP_S and before the last arrival, the mean
running and waiting requests, prefill tokens, the share of iterations that carry a prefill
chunk and the mean and 90th-percentile iteration time; and the Offline requests/s with the
KV cache as compiled and KV_TIMES as large (does KV capacity bind?).

With `--offline-n N [N ...]`, instead, the simulated Offline requests/s per replica of the
same rows computed on N requests each (the capacity search's upper bound, which it counts
as failing, is this number at its probe size), beside the submitted QPS per replica.

With `--kv-context`, instead, whether the measured operating point of the same rows fits
the KV cache with the workload's lengths: by Little's law the KV tokens a replica holds for
its decoding requests are QPS / replica x mean TPOT x E[output x prompt + output (output +
1) / 2] (each request holds its prompt and the tokens generated so far for output x TPOT
seconds; waiting and prefilling requests not counted, so it is a lower bound), beside the
KV capacity of the deployment's replica (`servecast.simulator.mlperf` rules). A ratio
above 1 means the submission could not have run at its measured TPOT with these lengths;
"prompt mean at most" is the largest mean prompt (the workload's prompts scaled) for which
it fits.

With `--prompt-scale S [S ...]`, instead, the input-length sensitivity on the development
Server rows of the OpenOrca benchmarks (one per model x GPU): prompts x S, the efficiency
that puts the Offline throughput at the submitted QPS (per row: a diagnostic, not a fit),
and the mean TPOT at NEAR x the submitted QPS beside the measured.

With `--operating-point S [S ...]`, instead, whether the simulator reaches the measured
operating point once nothing but the step time limits it (a diagnostic, not a protocol):
the same rows at the efficiency given (e.g. 1, the step-time model as is), the KV cache
KV_RELAX times the compiled one, prompts x S; the simulated Offline req/s per replica, then
at the submitted QPS the mean TTFT, mean TPOT and the mean decode concurrency (Little's
law, QPS x mean output x mean TPOT) beside the measured TPOT and concurrency.

With `--near-capacity F [F ...]`, instead, how steeply the simulated TPOT rises near the
replica's capacity: the same rows at the efficiency given, the KV cache KV_RELAX times the
compiled one, Poisson arrivals at F x the replica's steady Offline rate
(`search.offline_rates` on the same requests); the mean TTFT, mean TPOT and Little's-law
concurrency at each F, and where the submitted QPS falls on that scale.

    .venv/bin/python benchmarks/mlperf_tpot_gap.py --efficiency trtllm=F vllm=F
        [--kv-cache-dtype auto] [--requests 800] [--beams 4 | --kernels |
         --steps | --offline-n N [N ...] | --kv-context | --prompt-scale S [S ...] |
         --operating-point S [S ...] | --near-capacity F [F ...]]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from capacity_mlperf import families, load_rows, split

from servecast.datasets.catalog import shared_path
from servecast.simulator import search
from servecast.simulator.deployment import Deployment
from servecast.simulator.mlperf import MAX_SEQS, model_row
from servecast.simulator.workloads import lengths, poisson_arrivals

CONTEXT = 1024  # decode context of the `--kernels` attention rows, tokens
#: `--kernels` setups: (catalog GPU, aiconfigurator folder, TP)
KERNEL_GPUS = (("h100-sxm", "h100_sxm", 2), ("b200", "b200_sxm", 1))
WARMUP_S = 10.0  # `--steps`: iterations before this are the warm-up, s
KV_TIMES = 4  # `--steps`: the larger KV cache, x the compiled one
NEAR = 0.97  # `--prompt-scale`: the load, x the submitted QPS
KV_RELAX = 16  # `--operating-point`: the KV cache, x the compiled one


def row_gap(r: dict, m: dict, eff: dict, kv: str | None, n: int) -> dict:
    """The Little's-law numbers of one Server row (module doc); times in ms."""
    c = _replica(m, eff, kv)
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
          f"{beams} beams, prompt shared | {beams} full copies | {beams} beams (engine) | "
          "requests in batch | KV in use | tokens / iteration | decode step outside the "
          "linear layers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    seen = set()
    for r in rows:
        m = model_row(r)
        if r["scenario"] != "Offline" or not r["benchmark"].startswith("gptj") \
                or m["reason"] or m["gpu"] in seen:
            continue
        seen.add(m["gpu"])
        c = _replica(m, eff)
        prompt, output = lengths(m["workload"], n, seed=0)
        shared = np.concatenate([prompt, np.ones((beams - 1) * n, np.int64)])
        got = [n / search.run(c, np.zeros(len(p)), p, np.tile(output, len(p) // n))[
            "makespan_s"] * m["replicas"] for p in (prompt, shared, np.tile(prompt, beams))]
        got.append(search.saturation_rps(c, prompt, output, beams) * m["replicas"])
        meas = r["samples_per_s"]
        b = offline_batch(c, prompt, output, beams)
        print(f"| {m['gpu']} | {m['engine']} x {m['replicas']} | {meas:.1f} | " + " | ".join(
            f"{g:.1f} ({100 * (g / meas - 1):+.0f}%)" for g in got)
            + f" | {b['requests']:.0f} | {100 * b['kv_used']:.0f}% | {b['tokens']:.0f} | "
            f"{100 * b['attention_share']:.0f}% |", flush=True)


def offline_batch(c, prompt, output, beams: int) -> dict:
    """The batch of an Offline run (every request queued at t = 0, `beams` sequences
    each) over the iterations between the STEADY shares of its completions: mean
    `requests` in the batch, `kv_used` (share of the blocks), `tokens` scheduled per
    iteration and `attention_share`: 1 - (the step time of a decode-only batch of that
    many sequences at zero context) / (the same at the mean context)."""
    from servecast.simulator.core import Engine, Request

    eng = Engine(c)
    for i, (p, o) in enumerate(zip(prompt, output, strict=True)):
        eng.add(Request(i, 0.0, int(p), int(o), beams=beams))
    done, st = 0, []
    lo, hi = (f * len(prompt) for f in search.STEADY)
    while (s := eng.step()) is not None:
        done += len(s.finished_ids)
        if lo <= done <= hi:
            decodes = len(s.token_ids) - len(s.first_token_ids)
            st.append((s.batch, 1 - eng.free / eng.total, s.prefill_tokens + beams * decodes))
    a = np.array(st, float)
    seqs = int(round(a[:, 0].mean() * beams))
    ctx = float(prompt.mean() + output.mean() / 2)
    full, bare = c.decode_ms(seqs, np.array([ctx]))[0], c.decode_ms(seqs, np.array([0.0]))[0]
    return {"requests": a[:, 0].mean(), "kv_used": a[:, 1].mean(), "tokens": a[:, 2].mean(),
            "attention_share": 1 - bare / full}


def _ms(x) -> float:
    return float(np.ravel(x)[0])


def _measured_gemm(g: pd.DataFrame, m: int, n: int, k: int) -> float:
    """ms of an (m, n, k) GEMM from the measured table (log-interpolated in m; the nearest
    (n, k) scaled by n x k when the exact shape is missing)."""
    d = np.abs(np.log(g["n"] / n)) + np.abs(np.log(g["k"] / k))
    s = g[d == d.min()].sort_values("m")
    scale = n * k / float(s["n"].iloc[0] * s["k"].iloc[0])
    return float(np.interp(np.log(m), np.log(s["m"]), s["latency"])) * scale


def kernels_table(batches: tuple[int, ...] = (64, 256, 1024)) -> None:
    """The `--kernels` table (module doc)."""
    from servecast import gpus
    from servecast.predictors.step_time.configs import load_config
    from servecast.predictors.step_time.runtime import Runtime

    cfg, rt = load_config("llama-2-70b"), Runtime({}, [], {})
    print("| GPU | TP | batch | context | GEMMs measured / step-time (ratio) | decode "
          "attention measured / step-time (ratio) | 2 all-reduces measured / step-time "
          "(ratio) |")
    print("|---|---|---|---|---|---|---|")
    for gpu, folder, tp in KERNEL_GPUS:
        spec = gpus.resolve_spec(gpu)
        root = next(Path(shared_path(f"gpu/aiconfigurator/vllm/{folder}")).iterdir())
        g = pd.read_parquet(root / "gemm_perf.parquet")
        g = g[g["gemm_dtype"] == "fp8"]
        att = pd.read_parquet(root / "generation_attention_perf.parquet")
        ar = pd.read_parquet(root / "custom_allreduce_perf.parquet")
        h, kvh, hid, hd = cfg.heads // tp, cfg.kv_heads // tp, cfg.hidden, cfg.head_dim
        inter = cfg.intermediate // tp
        shapes = [((h + 2 * kvh) * hd, hid), (hid, h * hd), (2 * inter, hid), (hid, inter)]
        for b in batches:
            meas_g = sum(_measured_gemm(g, b, n, k) for n, k in shapes)
            phys_g = sum(_ms(rt.op_ms("gemm", spec, dtype="fp8", M=float(b), N=float(n),
                                      K=float(k))) for n, k in shapes)
            a = att[(att["batch_size"] == b) & (att["num_heads"] == h)
                    & (att["num_key_value_heads"] == kvh) & (att["head_dim"] == hd)
                    & (att["kv_cache_dtype"] == "bfloat16")]
            a = a.assign(ctx=a["isl"] + a["step"]).groupby("ctx")["latency"].mean()
            ctx = min(CONTEXT, int(a.index.max()))  # large batches: measured to short ctx
            meas_a = float(np.interp(ctx, a.index, a.values))
            phys_a = _ms(rt.op_ms("attn_decode", spec, B=float(b), M=1, N=float(ctx),
                                  H=h, kv_heads=kvh, head_dim=hd))
            cells = [(meas_g, phys_g), (meas_a, phys_a)]
            if tp > 1:
                r = ar[(ar["num_gpus"] == tp) & (ar["backend"] == "vllm_graph")
                       & (ar["allreduce_dtype"] == "bfloat16")].sort_values("message_size")
                meas_r = 2 * float(np.interp(np.log(b * hid), np.log(r["message_size"]),
                                             r["latency"]))
                phys_r = 2 * _ms(rt.op_ms("allreduce", spec, N=float(b * hid), tp=tp))
                cells.append((meas_r, phys_r))
            print(f"| {gpu} | {tp} | {b} | {ctx} | " + " | ".join(
                f"{x:.3f} / {y:.3f} ({x / y:.2f})" for x, y in cells)
                + (" |" if tp > 1 else " | - |"), flush=True)


def _dev_server_rows(rows: list[dict]):
    """One development Server row per model x GPU with its `model_row`."""
    seen = set()
    for r in rows:
        m = model_row(r)
        if r["scenario"] != "Server" or m["reason"] or r["split"] != "dev" \
                or (m["model"], m["gpu"]) in seen:
            continue
        seen.add((m["model"], m["gpu"]))
        yield r, m


def steps_table(rows: list[dict], eff: dict, n: int) -> None:
    """The `--steps` table (module doc)."""
    from servecast.simulator.core import Engine, Request

    print("| model | GPU | running | waiting | prefill tokens / iteration | iterations with "
          f"prefill | iteration ms mean / p90 | Offline req/s, KV x1 / x{KV_TIMES} |")
    print("|---|---|---|---|---|---|---|---|")
    for r, m in _dev_server_rows(rows):
        c = _replica(m, eff)
        prompt, output = lengths(m["workload"], n, seed=0)
        arr = poisson_arrivals(n, r["target_qps"] / m["replicas"], 0)
        eng, i, st = Engine(c), 0, []
        while i < n or not eng.idle:
            while i < n and (arr[i] <= eng.now or eng.idle):
                eng.add(Request(i, float(arr[i]), int(prompt[i]), int(output[i])))
                i += 1
            s = eng.step()
            if s is not None and WARMUP_S < s.start_s < arr[-1]:
                st.append((len(eng.running), len(eng.waiting), s.prefill_tokens,
                           s.duration_s * 1e3))
        a = np.array(st)
        sat = [search.saturation_rps(c, prompt, output)]
        c.kv_blocks *= KV_TIMES
        sat.append(search.saturation_rps(c, prompt, output))
        print(f"| {m['model']} | {m['gpu']} | {a[:, 0].mean():.0f} | {a[:, 1].mean():.1f} | "
              f"{a[:, 2].mean():.0f} | {100 * (a[:, 2] > 0).mean():.0f}% | "
              f"{a[:, 3].mean():.1f} / {np.percentile(a[:, 3], 90):.1f} | "
              f"{sat[0]:.2f} / {sat[1]:.2f} |", flush=True)


def offline_n_table(rows: list[dict], eff: dict, sizes: list[int]) -> None:
    """The `--offline-n` table (module doc)."""
    print("| model | GPU | submitted QPS / replica | " + " | ".join(
        f"Offline req/s, {k} requests" for k in sizes) + " |")
    print("|---|---|---|" + "---|" * len(sizes))
    for r, m in _dev_server_rows(rows):
        c = _replica(m, eff)
        got = [search.saturation_rps(c, *lengths(m["workload"], k, seed=0)) for k in sizes]
        print(f"| {m['model']} | {m['gpu']} | {r['target_qps'] / m['replicas']:.2f} | "
              + " | ".join(f"{g:.2f}" for g in got) + " |", flush=True)


def kv_context_table(rows: list[dict], n: int) -> None:
    """The `--kv-context` table (module doc)."""
    print("| model | GPU | TP | QPS / replica | mean TPOT ms | KV tokens held (Little) | KV "
          "capacity, tokens | held / capacity | workload prompt mean | prompt mean at most |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r, m in _dev_server_rows(rows):
        c = _replica(m, {})
        prompt, output = (x.astype(float) for x in lengths(m["workload"], n, seed=0))
        rate = r["target_qps"] / m["replicas"] * r["mean_tpot_ms"] / 1e3  # requests x s / s
        own, gen = float((output * prompt).mean()), float((output * (output + 1) / 2).mean())
        held, cap = rate * (own + gen), c.kv_blocks * c.deployment.block_size
        most = max(cap / rate - gen, 0.0) / own * prompt.mean()
        print(f"| {m['model']} | {m['gpu']} | {m['tp']} | {r['target_qps'] / m['replicas']:.2f} "
              f"| {r['mean_tpot_ms']:.0f} | {held:,.0f} | {cap:,.0f} | {held / cap:.2f} | "
              f"{prompt.mean():.0f} | {most:.0f} |", flush=True)


def prompt_scale_table(rows: list[dict], scales: list[float], n: int) -> None:
    """The `--prompt-scale` table (module doc)."""
    print("| model | GPU | prompt mean | Offline req/s per replica (factor 1) | efficiency "
          f"for Offline = submitted | sim mean TPOT at {NEAR} x submitted | measured TPOT |")
    print("|---|---|---|---|---|---|---|")
    for r, m in _dev_server_rows(rows):
        if not m["workload"].startswith(("mlperf-llama2", "mlperf-mixtral")):
            continue
        prompt0, output = lengths(m["workload"], max(n, 2000), seed=0)
        q = r["target_qps"] / m["replicas"]
        dep = {"model": m["model"], "gpu": m["gpu"], "tp": m["tp"], "dtype": m["dtype"],
               "engine": m["engine"], "max_num_seqs": MAX_SEQS,
               "kv_cache_dtype": m["kv_cache_dtype"]}
        for sc in scales:
            prompt = np.maximum(np.round(prompt0 * sc), 1).astype(np.int64)
            sat = search.saturation_rps(search.compile_replica(Deployment(
                **dep, efficiency=1.0)), prompt, output)
            c = search.compile_replica(Deployment(**dep, efficiency=q / sat))
            got = search.probe(c, poisson_arrivals(n, NEAR * q, 0), prompt[:n], output[:n])
            print(f"| {m['model']} | {m['gpu']} | {prompt.mean():.0f} | {sat:.2f} | "
                  f"{q / sat:.3f} | {got['mean_tpot_ms']:.0f} | {r['mean_tpot_ms']:.0f} |",
                  flush=True)


def operating_point_table(rows: list[dict], eff: dict, scales: list[float], n: int) -> None:
    """The `--operating-point` table (module doc)."""
    print("| model | GPU | prompt mean | Offline req/s / replica | submitted QPS / replica | "
          "sim mean TTFT ms | sim mean TPOT ms / concurrency | measured TPOT ms / "
          "concurrency |")
    print("|---|---|---|---|---|---|---|---|")
    for r, m in _dev_server_rows(rows):
        c = _replica(m, eff)
        c.kv_blocks *= KV_RELAX
        prompt0, output = lengths(m["workload"], max(n, 2000), seed=0)
        q = r["target_qps"] / m["replicas"]
        for sc in scales:
            prompt = np.maximum(np.round(prompt0 * sc), 1).astype(np.int64)
            sat = search.saturation_rps(c, prompt, output)
            got = search.probe(c, poisson_arrivals(n, q, 0), prompt[:n], output[:n])
            out = float(output[:n].mean())
            print(f"| {m['model']} | {m['gpu']} | {prompt.mean():.0f} | {sat:.2f} | {q:.2f} | "
                  f"{got['mean_ttft_ms']:.0f} | {got['mean_tpot_ms']:.0f} / "
                  f"{q * out * got['mean_tpot_ms'] / 1e3:.0f} | {r['mean_tpot_ms']:.0f} / "
                  f"{q * out * r['mean_tpot_ms'] / 1e3:.0f} |", flush=True)


def near_capacity_table(rows: list[dict], eff: dict, fractions: list[float], n: int) -> None:
    """The `--near-capacity` table (module doc)."""
    print("| model | GPU | steady Offline req/s / replica | submitted QPS / steady | " + " | ".join(
        f"TTFT ms, TPOT ms / concurrency at {f:g}" for f in fractions) + " | measured TPOT ms "
        "/ concurrency |")
    print("|---|---|---|---|" + "---|" * len(fractions) + "---|")
    for r, m in _dev_server_rows(rows):
        c = _replica(m, eff)
        c.kv_blocks *= KV_RELAX
        prompt, output = lengths(m["workload"], n, seed=0)
        steady = search.offline_rates(c, prompt, output)[1]
        q, out = r["target_qps"] / m["replicas"], float(output.mean())
        cells = []
        for f in fractions:
            got = search.probe(c, poisson_arrivals(n, f * steady, 0), prompt, output)
            cells.append(f"{got['mean_ttft_ms']:.0f}, {got['mean_tpot_ms']:.0f} / "
                         f"{f * steady * out * got['mean_tpot_ms'] / 1e3:.0f}")
        print(f"| {m['model']} | {m['gpu']} | {steady:.2f} | {q / steady:.2f} | "
              + " | ".join(cells) + f" | {r['mean_tpot_ms']:.0f} / "
              f"{q * out * r['mean_tpot_ms'] / 1e3:.0f} |", flush=True)


def _replica(m: dict, eff: dict, kv: str | None = None):
    """One replica of row deployment `m` at its family's factor in `eff` (1 if absent)."""
    return search.compile_replica(Deployment(
        model=m["model"], gpu=m["gpu"], tp=m["tp"], dtype=m["dtype"], engine=m["engine"],
        max_num_seqs=MAX_SEQS, efficiency=eff.get(m["engine"], 1.0),
        kv_cache_dtype=kv or m["kv_cache_dtype"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--efficiency", nargs="+", required=True, metavar="FAMILY=F")
    ap.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default=None)
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--beams", type=int, default=0, help="the GPT-J Offline beams table")
    ap.add_argument("--kernels", action="store_true", help="step time vs measured kernels")
    ap.add_argument("--steps", action="store_true", help="iterations at the submitted QPS")
    ap.add_argument("--offline-n", type=int, nargs="+", metavar="N",
                    help="Offline throughput vs the requests it is computed on")
    ap.add_argument("--kv-context", action="store_true",
                    help="does the measured operating point fit the KV cache?")
    ap.add_argument("--prompt-scale", type=float, nargs="+", metavar="S",
                    help="the input-length sensitivity table")
    ap.add_argument("--operating-point", type=float, nargs="+", metavar="S",
                    help="the submitted QPS with the KV cache relaxed, prompts x S")
    ap.add_argument("--near-capacity", type=float, nargs="+", metavar="F",
                    help="TPOT at F x the steady Offline rate, the KV cache relaxed")
    args = ap.parse_args()
    if args.kernels:
        kernels_table()
        return
    eff = families(args.efficiency)
    rows = load_rows()
    split(rows)
    if args.beams:
        beams_table(rows, eff, args.beams, args.requests)
        return
    if args.steps:
        steps_table(rows, eff, args.requests)
        return
    if args.offline_n:
        offline_n_table(rows, eff, args.offline_n)
        return
    if args.kv_context:
        kv_context_table(rows, max(args.requests, 20000))
        return
    if args.prompt_scale:
        prompt_scale_table(rows, args.prompt_scale, args.requests)
        return
    if args.near_capacity:
        near_capacity_table(rows, eff, args.near_capacity, args.requests)
        return
    if args.operating_point:
        operating_point_table(rows, eff, args.operating_point, args.requests)
        return
    print("| model | GPU | engine | TP x replicas | QPS / replica | measured TPOT / C | "
          "simulated TPOT / C | sim step at measured C | KV holds (requests) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r, m in _dev_server_rows(rows):
        g = row_gap(r, m, eff, args.kv_cache_dtype, args.requests)
        print(f"| {m['model']} | {m['gpu']} | {m['engine']} | {m['tp']} x {m['replicas']} | "
              f"{g['qps_per_replica']:.2f} | {g['measured_tpot']:.0f} / "
              f"{g['measured_conc']:.0f} | {g['sim_tpot']:.0f} / {g['sim_conc']:.0f} | "
              f"{g['sim_step_at_measured_conc']:.0f} | {g['kv_requests']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
