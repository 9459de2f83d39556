"""Capacity commands: `capacity` (the highest rate within an SLO, with its knee report) and
`plan` (the fewest GPUs per GPU type for a load)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from servecast.commands import common
from servecast.commands.common import (
    DbOption,
    StepModelOption,
    console,
    out_path,
    print_frame,
)
from servecast.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity)
    app.command("plan")(plan)


_MODEL = typer.Option(..., "--model", help="shipped model (`servecast gpus` lists GPUs)")
_WORKLOAD = typer.Option(
    "sharegpt", "--workload",
    help="named workload: sharegpt, mlperf-llama2-70b, mlperf-mixtral-8x7b, mlperf-gptj")
_TTFT = typer.Option(None, "--ttft-ms", help="p99 TTFT limit (ms)")
_TPOT = typer.Option(None, "--tpot-ms", help="p99 TPOT limit (ms)")
_REQUESTS = typer.Option(1000, "--requests", help="requests simulated per probe")
_SEEDS = typer.Option(3, "--seeds", help="seeds (length draws and arrivals)")
DEFAULT_MAX_SEQS = common.MaxSeqsOption.default
_MAX_SEQS_AUTO = typer.Option(
    str(DEFAULT_MAX_SEQS), "--max-num-seqs",
    help="running requests per replica at most, or auto: the cap of the highest capacity "
    f"(simulator.max_batch: a geometric grid up to the KV bound, and {DEFAULT_MAX_SEQS})")


def _deployment(model, gpu, tp, dtype, engine, max_num_seqs, efficiency, kv_cache_dtype,
                replicas=1):
    from servecast.simulator.deployment import Deployment

    return Deployment(model=model, gpu=gpu, tp=tp, replicas=replicas, dtype=dtype,
                      engine=engine, max_num_seqs=max_num_seqs, efficiency=efficiency,
                      kv_cache_dtype=kv_cache_dtype)


def _trace_requests(db: Path | None, trace: str):
    """(arrival_s, prompt_tokens, output_tokens) of an ingested LLM trace, by arrival."""
    import numpy as np

    from servecast.store import Store

    with Store(db, read_only=True) as store:
        rows = store.con.execute(
            "SELECT arrival_s, prompt_tokens, output_tokens FROM llm_requests WHERE trace = ? "
            "AND arrival_s IS NOT NULL AND NOT failed AND output_tokens >= 1 "
            "ORDER BY arrival_s", [trace]).fetchnumpy()
    if not len(rows["arrival_s"]):
        raise InvalidInputError(f"trace {trace!r} has no LLM requests with arrival times in "
                                "the store; `servecast ingest` it or check `servecast traces`")
    return (np.asarray(rows["arrival_s"], float), np.asarray(rows["prompt_tokens"]),
            np.asarray(rows["output_tokens"]))


def capacity(
    model: str = _MODEL,
    gpu: str = typer.Option(..., "--gpu", help="catalog GPU or spec file"),
    tp: int = typer.Option(1, "--tp", help="tensor parallelism per replica"),
    replicas: int = typer.Option(1, "--replicas", help="replicas behind a random router"),
    ttft_ms: float | None = _TTFT,
    tpot_ms: float | None = _TPOT,
    workload: str = _WORKLOAD,
    trace: str | None = typer.Option(None, "--trace", help="an ingested LLM trace instead of "
                                     "a workload (its rate is scaled, its shape kept)"),
    requests: int = _REQUESTS,
    seeds: int = _SEEDS,
    dtype: str = common.DtypeOption,
    engine: str = common.EngineOption,
    max_num_seqs: str = _MAX_SEQS_AUTO,
    efficiency: float | None = common.EfficiencyOption,
    kv_cache_dtype: str = common.KvDtypeOption,
    step_model: Path | None = StepModelOption,
    report: Path | None = typer.Option(None, "--report", help="write the knee report (HTML)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the result as JSON"),
    db: Path = DbOption,
) -> None:
    """The highest Poisson rate (or trace rate scale) whose p99 TTFT and p99 TPOT stay
    within the limits (MLPerf's Server rule), with its spread over seeds; with
    `--max-num-seqs auto`, at the cap that maximises it."""
    from servecast.analytics.capacity import knee, write_capacity_report
    from servecast.simulator import max_batch, search
    from servecast.simulator.deployment import load_runtime

    cap_given = max_batch.parse_cap(max_num_seqs, DEFAULT_MAX_SEQS)
    slo = search.SLO(ttft_ms, tpot_ms)
    runtime = load_runtime(step_model)
    deployment = _deployment(model, gpu, tp, dtype, engine, cap_given or DEFAULT_MAX_SEQS,
                             efficiency, kv_cache_dtype)
    if trace:
        sample = search.trace_sample(*_trace_requests(db, trace), replicas=replicas)
        source = f"trace {trace}"
    else:
        if requests < 2:
            raise InvalidInputError(f"--requests {requests}: simulate at least 2 requests")
        sample = search.poisson_sample(workload, requests, replicas)
        source = f"workload {workload} (Poisson)"
    cap, compiled, tuned = max_batch.capacity_at(search.compile_replica(deployment, runtime),
                                                 slo, sample, cap_given is None, seeds,
                                                 replicas=replicas)
    if tuned:
        console.print(f"max_num_seqs auto (cap: req/s): {tuned.text()} (KV bound "
                      f"{tuned.kv_bound}) -> [bold]{tuned.max_num_seqs}[/]")
    scale = ""
    if trace:
        scale = f" = trace rate x {cap.rate / sample.base_rate:.3g}"
    console.print(f"{model} on {replicas} x {tp} x {gpu} ({dtype}, {engine}), {source}: "
                  f"capacity [bold]{cap.rate:.3g} req/s[/]{scale} within {slo.text()} "
                  f"(seeds: {', '.join(f'{r:.3g}' for r in cap.per_seed)}; Offline "
                  f"throughput {cap.saturation_rps:.3g} req/s; {len(cap.probes)} probes); "
                  f"engine overhead per step {compiled.overhead_text()}")
    result = {"model": model, "gpu": gpu, "tp": tp, "replicas": replicas, "dtype": dtype,
              "engine": engine, "engine_overhead": compiled.overhead_text(),
              "max_num_seqs": compiled.deployment.max_num_seqs,
              "max_num_seqs_rates": tuned and {str(c): r or None
                                               for c, r in tuned.rates.items()},
              "source": source, "rate": cap.rate, "low": cap.low,
              "high": cap.high, "per_seed": cap.per_seed, "ttft_ms": ttft_ms,
              "tpot_ms": tpot_ms, "saturation_rps": cap.saturation_rps,
              "probes": cap.probes}
    if report or json_out:
        curve = search.load_curve(compiled, sample, replicas=replicas)
        result["curve"] = curve
        k = knee(curve, "p99_ttft_ms")
        result["knee_rps"] = k["rate"] if k else None
    if json_out:
        out_path(json_out).write_text(json.dumps(result, indent=1))
        console.print(f"[green]wrote[/] {json_out}")
    if report:
        setup = {"model": model, "GPU": gpu, "TP x replicas": f"{tp} x {replicas}",
                 "dtype / engine": f"{dtype} / {engine}", "load": source,
                 "requests per probe x seeds": f"{requests} x {seeds}"}
        path = write_capacity_report(result["curve"], setup, result, out_path(report))
        console.print(f"[green]wrote[/] {path}")


def _prices(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, price = item.partition("=")
        try:
            out[name.strip()] = float(price)
        except ValueError:
            raise InvalidInputError(f"--price {item!r}: expected GPU=PRICE_PER_GPU_HOUR "
                                    "(h100-sxm=2.5)") from None
        if out[name.strip()] < 0:
            raise InvalidInputError(f"--price {item!r}: a price must be >= 0")
    return out


def plan(
    model: str = _MODEL,
    gpu: list[str] = typer.Option(..., "--gpu", help="GPU type to consider (repeat)"),
    rate: float | None = typer.Option(None, "--rate", help="the load to serve (req/s; "
                                      "Poisson, or the trace re-timed to it)"),
    trace: str | None = typer.Option(None, "--trace", help="an ingested LLM trace to serve "
                                     "(at its own rate unless --rate)"),
    ttft_ms: float | None = _TTFT,
    tpot_ms: float | None = _TPOT,
    workload: str = _WORKLOAD,
    tps: str = typer.Option("1,2,4,8", "--tps", help="TP values to try"),
    price: list[str] = typer.Option([], "--price", help="GPU=PRICE per GPU-hour (repeat)"),
    requests: int = typer.Option(500, "--requests", help="requests simulated per probe"),
    seeds: int = typer.Option(2, "--seeds"),
    dtype: str = common.DtypeOption,
    engine: str = common.EngineOption,
    max_num_seqs: int = common.MaxSeqsOption,
    efficiency: float | None = common.EfficiencyOption,
    kv_cache_dtype: str = common.KvDtypeOption,
    step_model: Path | None = StepModelOption,
    db: Path = DbOption,
) -> None:
    """The fewest GPUs (replicas x TP) of each GPU type that serve `--rate` of a workload, or
    a trace, within the SLO, and the cost per hour when `--price` is given."""
    import polars as pl

    from servecast.simulator import search
    from servecast.simulator.deployment import load_runtime

    try:
        tp_list = tuple(int(t) for t in tps.split(",") if t.strip())
    except ValueError:
        raise InvalidInputError(f"--tps {tps!r}: expected comma-separated integers") from None
    prices = _prices(price)
    unknown = set(prices) - set(gpu)
    if unknown:
        raise InvalidInputError(f"--price for {', '.join(sorted(unknown))}, not among the "
                                f"--gpu types {', '.join(gpu)}")
    if rate is None and trace is None:
        raise InvalidInputError("give the load: --rate REQ_PER_S (a workload) or --trace T")
    slo = search.SLO(ttft_ms, tpot_ms)
    rows = search.plan(_deployment(model, gpu[0], 1, dtype, engine, max_num_seqs, efficiency,
                                   kv_cache_dtype),
                       gpu, slo, rate, workload, requests, seeds, tp_list, prices,
                       runtime=load_runtime(step_model),
                       trace=_trace_requests(db, trace) if trace else None)
    df = pl.DataFrame(rows, schema_overrides={"cost_per_hour": pl.Float64,
                                              "replica_rps": pl.Float64})
    print_frame(df.select("gpu", "tp", "replicas", "gpus", "replica_rps", "cost_per_hour",
                          "best", "reason"),
                title=f"{model}: {f'trace {trace}' if trace else workload}"
                      f"{f' at {rate:g} req/s' if rate else ''} within {slo.text()}")
    best = df.filter(pl.col("best"))
    if not best.height:
        raise InvalidInputError(f"no GPU type and TP serves {model} within the SLO; see the "
                                "reasons above")
    for r in best.iter_rows(named=True):
        cost = f", {r['cost_per_hour']:.2f} per hour" if r["cost_per_hour"] is not None else ""
        console.print(f"{r['gpu']}: {r['gpus']} GPUs = {r['replicas']} replicas x TP "
                      f"{r['tp']}{cost}")
