"""`servecast emulate`: an OpenAI-compatible server whose tokens the simulator times."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands import common
from servecast.commands.common import StepModelOption, console
from servecast.service.limits import ServeLimits


def register(app: typer.Typer) -> None:
    app.command()(emulate)


def emulate(
    model: str = typer.Option(..., "--model", help="step-time model config name (the served "
                              "model id) or a Hugging Face config.json"),
    gpu: str = typer.Option(..., "--gpu", help="GPU catalog name (`servecast gpus`) or spec "
                            "file"),
    replicas: int = typer.Option(1, "--replicas", help="replicas behind the router"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel GPUs per replica"),
    dtype: str = common.DtypeOption,
    engine: str = common.EngineOption,
    efficiency: float | None = common.EfficiencyOption,
    max_num_seqs: int = common.MaxSeqsOption,
    kv_cache_dtype: str = common.KvDtypeOption,
    router: str = typer.Option("round_robin", "--router",
                               help="round_robin | least_tokens | prefix_affinity"),
    policy: str = typer.Option("fcfs", "--policy", help="fcfs | sjf_oracle (by max_tokens); "
                               "with --lengths-model also sjf_pred | sjf_p90 | "
                               "sjf_pred_aging | kv_p90"),
    step_model: Path = StepModelOption,
    output_tokens: int = typer.Option(256, "--output-tokens", min=1,
                                      help="output length of a request without max_tokens"),
    lengths_model: Path = typer.Option(
        None, "--lengths-model", help="saved output-length model: each request's predicted "
        "p50 / p90 (for --policy); one without max_tokens generates its p50"),
    log: Path = typer.Option(None, "--log", help="JSONL file: one line per finished request "
                             "with its simulated ttft_ms / tpot_ms / e2el_ms"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface (loopback by default)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve `/v1/models`, `/v1/completions` and `/v1/chat/completions` (OpenAI's API,
    streamed or not) with every token emitted when the simulator produces it: the iteration
    times of MODEL on `--replicas` x `--tp` GPUs GPU, in real time. Point vLLM bench,
    GuideLLM, AIPerf, a router or an autoscaler at it. A model that does not fit the GPUs, an
    unknown model, GPU, router or policy, or a policy that needs predictions without
    `--lengths-model`, exits 2."""
    from servecast.emulator.app import create_app
    from servecast.emulator.driver import Driver, Fleet
    from servecast.errors import InvalidInputError
    from servecast.estimator import Estimator
    from servecast.service.limits import run_uvicorn
    from servecast.simulator.deployment import Compiled, Deployment, load_runtime

    compiled = Compiled(Deployment(model=model, gpu=gpu, tp=tp, replicas=replicas,
                                   dtype=dtype, engine=engine, efficiency=efficiency,
                                   max_num_seqs=max_num_seqs, kv_cache_dtype=kv_cache_dtype),
                        load_runtime(step_model))
    _check_port(host, port)
    lengths = None
    if lengths_model is not None:
        lengths = Estimator.load(lengths_model)
        if "output_length" not in lengths.kinds:
            raise InvalidInputError(f"{lengths_model}: no output-length model (it holds "
                                    f"{', '.join(lengths.kinds) or 'none'}); train one with "
                                    "`servecast train output-length`")
    driver = Driver(Fleet(compiled, policy, router, predicts=lengths is not None), log=log)
    app = create_app(driver, model, output_tokens, lengths)
    console.print(f"emulating {model} on {replicas} x {tp} {gpu} "
                  f"({driver.fleet.describe()}) at "
                  f"http://{host}:{port}/v1" + (f"; per-request log {log}" if log else ""))
    run_uvicorn(app, host, port, log_level, ServeLimits())


def _check_port(host: str, port: int) -> None:
    """InvalidInputError when host:port cannot be bound (in use, or no such interface)."""
    import socket

    from servecast.errors import InvalidInputError

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise InvalidInputError(f"cannot listen on {host}:{port} ({e.strerror}); pick another "
                                "--port or --host") from None
