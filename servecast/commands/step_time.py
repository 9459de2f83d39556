"""Step-time commands: `train step-time`, `estimate step-time`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from servecast.commands.common import DbOption, console, group
from servecast.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    group(app, "train").command("step-time")(train_step_time)
    group(app, "estimate").command("step-time")(estimate_step_time)


def train_step_time(
    db: Path = DbOption,
    out: Path = typer.Option(Path("models/step_time"), "--out", help="model folder"),
    trace: str = typer.Option("aiconfigurator", "--trace", help="aiconfigurator operator trace"),
    trees: int = typer.Option(150, "--trees", min=1),
    overhead_ms: float | None = typer.Option(
        None, "--overhead-ms", min=0,
        help="engine CPU time per iteration (ms) saved as the default; default: the vLLM "
             "overhead fitted on the store's serving rows (0 without them)"),
) -> None:
    """Fit the operator residuals behind the step-time model on aiconfigurator's vLLM
    operator tables (`servecast ingest aiconfigurator ...` first), then each engine family's
    overhead (per iteration, per all-reduce ring step, per sequence) on the store's measured
    serving rows (Argonne vLLM and TensorRT-LLM batches, Splitwise prompt / token times;
    rows not run in bf16 left out: `serving.not_bf16`), when ingested."""
    from servecast.predictors.operator_latency.data import operator_frame
    from servecast.predictors.step_time.model import StepTimeModel
    from servecast.predictors.step_time.runtime import describe_overhead
    from servecast.predictors.step_time.serving import serving_frame
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        frame = operator_frame(store, trace)
        rows = serving_frame(store)
    model = StepTimeModel(trees=trees, overhead_ms=overhead_ms).fit(frame, serving=rows)
    model.save(out)
    fitted = "; ".join(f"{e} {describe_overhead(v)}" for e, v in model.overheads.items()) \
        or "none"
    console.print(f"[green]saved[/] {out} ({frame.height:,} operator rows, "
                  f"GPUs {', '.join(model.ops.card['devices'])}; engine overhead per "
                  f"iteration: {fitted} from {rows.height:,} serving rows)")


def parse_decode(text: str) -> list[int]:
    """`64x1024` (64 sequences at context 1024) or `512,900,1024` -> context lengths."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        n, _, ctx = part.partition("x")
        try:
            out += [int(ctx)] * int(n) if ctx else [int(n)]
        except ValueError:
            raise InvalidInputError(f"--decode {text!r}: expected COUNTxCONTEXT (64x1024) or "
                                    "comma-separated context lengths") from None
    return out


def parse_prefill(text: str) -> tuple[list[int], list[int]]:
    """`2048` or `512@1024,2048` (chunk@offset) -> (chunk lengths, context offsets)."""
    chunks, offsets = [], []
    for part in filter(None, (p.strip() for p in text.split(","))):
        n, _, off = part.partition("@")
        try:
            chunks.append(int(n))
            offsets.append(int(off) if off else 0)
        except ValueError:
            raise InvalidInputError(f"--prefill {text!r}: expected LENGTH[@OFFSET],... "
                                    "(2048 or 512@1024)") from None
    return chunks, offsets


def estimate_step_time(
    model: str = typer.Option(..., "--model", help="shipped model name or a config.json"),
    gpu: str = typer.Option(..., "--gpu", help="catalog GPU (`servecast gpus`) or spec file"),
    prefill: str = typer.Option("", "--prefill", help="chunk lengths: 2048 or 512@1024,2048"),
    decode: str = typer.Option("", "--decode", help="decode contexts: 64x1024 or 900,1024"),
    tp: int = typer.Option(1, "--tp", help="tensor parallelism"),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 or fp8 weights / GEMMs"),
    overhead_ms: float | None = typer.Option(
        None, "--overhead-ms", min=0, help="engine CPU time per step (ms; default: the model's)"),
    engine_family: str | None = typer.Option(
        None, "--engine", help="use the overhead fitted for this engine family (vllm, "
                               "trtllm, splitwise; default: the model's default)"),
    models: Path = typer.Option(Path("models/step_time"), "--models",
                                help="a step_time model folder or a models dir"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Time of one engine iteration (ms) and the memory model, from the GPU's spec sheet."""
    from servecast.estimator import Estimator

    chunks, offsets = parse_prefill(prefill)
    est = Estimator.load(models)
    engine = est.runtime("step_time").engine(model, gpu, tp, dtype, overhead_ms,
                                             engine=engine_family)
    parts = engine.breakdown(chunks, offsets, parse_decode(decode))
    ms = sum(parts.values())
    out = {"step_ms": ms, "breakdown": parts, **engine.memory()}
    if as_json:
        console.print_json(json.dumps(out))
        return
    console.print(f"step time {ms:.3f} ms  |  weights {out['weights_gib']:.1f} GiB/GPU, "
                  f"KV {out['kv_bytes_per_token']:,.0f} B/token, capacity "
                  f"{out['kv_capacity_tokens']:,} tokens")
    console.print("  = " + " + ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in
                                       parts.items() if v > 0) + " ms")
