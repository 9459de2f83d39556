"""Simulation command: `servecast simulate TRACE --model M --gpu G ...`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import typer

from servecast.commands import common
from servecast.commands.common import DbOption, StepModelOption, console
from servecast.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    app.command("simulate", context_settings={"allow_extra_args": True,
                                              "ignore_unknown_options": False})(simulate)


#: vLLM's `--goodput ttft:MS tpot:MS` takes several values: the extra ones arrive as args
_GOODPUT_ITEM = re.compile(r"^(ttft|tpot|e2el):")


def simulate(
    ctx: typer.Context,
    trace: str = typer.Argument(..., help="store trace NAME, synth:NAME (synthesized from "
                                "store trace NAME) or workload:NAME (e.g. workload:sharegpt)"),
    model: str = typer.Option("llama-3.1-8b", "--model", help="step-time model config name "
                              "or a Hugging Face config.json"),
    gpu: str = typer.Option("l40s", "--gpu", help="GPU catalog name (`servecast gpus`) or "
                            "spec file"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel GPUs per replica"),
    replicas: int = typer.Option(1, "--replicas", help="replicas behind the router"),
    dtype: str = common.DtypeOption,
    engine: str = common.EngineOption,
    efficiency: float | None = common.EfficiencyOption,
    max_num_seqs: int = common.MaxSeqsOption,
    kv_cache_dtype: str = common.KvDtypeOption,
    max_num_batched_tokens: int = typer.Option(8192, "--max-num-batched-tokens"),
    chunked_prefill: bool = typer.Option(True, "--chunked-prefill/--no-chunked-prefill"),
    prefix_caching: bool = typer.Option(True, "--prefix-caching/--no-prefix-caching"),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization"),
    block_size: int = typer.Option(16, "--block-size", help="tokens per KV block"),
    policy: str = typer.Option("fcfs", "--policy", help="fcfs | sjf_pred | sjf_p90 | "
                               "sjf_oracle | sjf_pred_aging | kv_p90"),
    router: str = typer.Option("round_robin", "--router",
                               help="round_robin | least_tokens | prefix_affinity"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="multiply the arrival rate"),
    rate: float = typer.Option(float("inf"), "--rate", help="Poisson arrivals at this many "
                               "requests/s (workload: inf = all at t=0; a trace: inf = its "
                               "own arrivals)"),
    num_prompts: int = typer.Option(None, "--num-prompts", help="requests: the first N "
                                    "(workload:NAME: N drawn, default 1000)"),
    duration: float = typer.Option(3600.0, "--duration", help="synth:NAME: seconds"),
    seed: int = typer.Option(0, "--seed", help="random seed (workload, synth)"),
    goodput: list[str] = typer.Option(None, "--goodput", help="SLOs KEY:MS (ttft, tpot, "
                                      "e2el), e.g. --goodput ttft:500 tpot:50"),
    step_model: Path = StepModelOption,
    lengths_model: Path = typer.Option(None, "--lengths-model", help="saved output-length "
                                       "model: p50 / p90 for the SJF and KV policies"),
    out: Path = typer.Option(None, "--out", help="write requests.jsonl and result.json "
                             "(vLLM bench's schema) here"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    db: Path = DbOption,
) -> None:
    """Simulate serving TRACE on `--replicas` x `--tp` GPUs: TTFT / TPOT / ITL / E2EL,
    throughput and goodput in vLLM bench's names."""
    from servecast.simulator import metrics
    from servecast.simulator.cluster import simulate_trace
    from servecast.simulator.deployment import Compiled, Deployment, load_runtime

    items = list(goodput or [])
    for arg in ctx.args:
        if not _GOODPUT_ITEM.match(arg):
            raise InvalidInputError(f"unexpected argument {arg!r}; see `servecast simulate "
                                    "--help`")
        items.append(arg)
    slos = metrics.parse_goodput([p for item in items for p in item.replace(",", " ").split()])
    dep = Deployment(model=model, gpu=gpu, tp=tp, replicas=replicas, dtype=dtype,
                     engine=engine, max_num_seqs=max_num_seqs,
                     max_num_batched_tokens=max_num_batched_tokens,
                     chunked_prefill=chunked_prefill, prefix_caching=prefix_caching,
                     gpu_memory_utilization=gpu_memory_utilization, block_size=block_size,
                     efficiency=efficiency, kv_cache_dtype=kv_cache_dtype)
    compiled = Compiled(dep, load_runtime(step_model))
    reqs = _requests(trace, db, rate_scale, num_prompts, rate, duration, seed, lengths_model)
    from tqdm import tqdm

    with tqdm(total=len(reqs), unit="req", desc="simulate", file=sys.stderr,
              disable=None if len(reqs) > 2000 else True) as bar:
        run = simulate_trace(reqs, compiled, policy=policy, router=router,
                             progress=lambda n: bar.update(n - bar.n))
    given = rate * rate_scale if rate != float("inf") else None
    summary = (metrics.write_results(run, out, slos, given) if out is not None
               else metrics.summarize(run, slos))
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        _print_summary(summary, compiled, trace)
    if out is not None:
        console.print(f"[green]wrote[/] {out}/requests.jsonl and {out}/result.json")


def _requests(trace, db, rate_scale, num_prompts, rate, duration, seed, lengths_model):
    from servecast.simulator.traces import load_requests

    if num_prompts is not None and num_prompts < 1:
        raise InvalidInputError(f"--num-prompts {num_prompts} must be >= 1")
    if trace.startswith("workload:"):
        return load_requests(trace, None, rate_scale, num_prompts or 1000, rate, duration,
                             seed, lengths_model)
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        reqs = load_requests(trace, store, rate_scale, 1000, rate, duration, seed,
                             lengths_model)
    return sorted(reqs, key=lambda r: r.arrival_s)[:num_prompts]


def _print_summary(s: dict, compiled, trace: str) -> None:
    """The summary laid out as `vllm bench serve` prints it, with the deployment and the
    engine overhead in its steps (`Compiled.overhead_text`)."""
    dep = compiled.deployment
    lines = [f"{' Simulated Serving Result ':=^50}",
             f"{'Trace:':<40} {trace}",
             f"{'Deployment:':<40} {dep.replicas} x {dep.tp} {dep.gpu}, {dep.model}, "
             f"{dep.engine}",
             f"{'Engine overhead per step:':<40} {compiled.overhead_text()}",
             f"{'Successful requests:':<40} {s['completed']}",
             f"{'Benchmark duration (s):':<40} {s['duration']:.2f}",
             f"{'Total input tokens:':<40} {s['total_input_tokens']}",
             f"{'Total generated tokens:':<40} {s['total_output_tokens']}",
             f"{'Request throughput (req/s):':<40} {s['request_throughput']:.2f}"]
    if s["request_goodput"] is not None:
        lines += [f"{'Request goodput (req/s):':<40} {s['request_goodput']:.2f}",
                  f"{'SLO attainment (%):':<40} {100 * s['slo_attainment']:.2f}"]
    lines += [f"{'Output token throughput (tok/s):':<40} {s['output_throughput']:.2f}",
              f"{'Total Token throughput (tok/s):':<40} {s['total_token_throughput']:.2f}",
              f"{'Preemptions:':<40} {s['preemptions']}",
              f"{'Prefix cache hit rate (%):':<40} {100 * s['prefix_cache_hit_rate']:.2f}"]
    for key, name in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL")):
        lines.append(f"{name:-^50}")
        lines += [f"{label + ' ' + name + ' (ms):':<40} {s[f'{k}_{key}_ms']:.2f}"
                  for label, k in (("Mean", "mean"), ("Median", "median"), ("P90", "p90"),
                                   ("P99", "p99"))]
    lines.append("=" * 50)
    typer.echo("\n".join(lines))
