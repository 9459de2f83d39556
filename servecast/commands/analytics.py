"""Analytics commands: characterize, report, synth, export."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from servecast.commands.common import DbOption, console
from servecast.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    app.command()(characterize)
    app.command()(report)
    app.command()(synth)
    app.command()(export)


SloOption = typer.Option(None, "--slo", help="SLO limit NAME:MS (ttft, tpot, e2e, queue), "
                         "repeat or comma-separate: --slo ttft:500 --slo tpot:50")


def characterize(
    trace: str = typer.Argument(..., help="trace name (see `servecast traces`)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    slo: list[str] = SloOption,
    db: Path = DbOption,
) -> None:
    """Characterize a trace: arrivals, fits, lengths, sessions, prefixes, failures, latency
    (with --slo: attainment and goodput) (LLM); durations, queueing, GPUs, series, nodes
    (cluster); variability and drift (VM)."""
    from servecast.analytics.characterize import characterize as run
    from servecast.analytics.latency import parse_slo
    from servecast.store import Store

    limits = parse_slo(slo)
    with Store(db, read_only=True) as store:
        summary = run(store, trace, slo=limits)
    if as_json:
        typer.echo(json.dumps(summary, indent=1, default=str))
        return
    console.print_json(json.dumps(summary, default=str))


def report(
    trace: str = typer.Argument(..., help="trace name (see `servecast traces`)"),
    out: Path = typer.Option(Path("out/report"), "--out", help="output folder"),
    slo: list[str] = SloOption,
    db: Path = DbOption,
) -> None:
    """Write a self-contained HTML report (figures embedded) and summary.json into --out."""
    from servecast.analytics.latency import parse_slo
    from servecast.analytics.report import write_report
    from servecast.store import Store

    limits = parse_slo(slo)
    with Store(db, read_only=True) as store:
        path = write_report(store, trace, out, slo=limits)
    console.print(f"[green]report[/] {path}  (summary: {path.parent / 'summary.json'})")


def synth(
    source_trace: str = typer.Option(None, "--from", help="trace to fit (LLM requests)"),
    model_file: Path = typer.Option(None, "--model", help="a saved workload model (JSON) "
                                    "instead of --from"),
    windows: Path = typer.Option(None, "--windows", help="ServeGen-style per-window arrival "
                                 "parameters (CSV/JSON: start_s,rate,cv[,dist][,duration_s])"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="multiply the request rate"),
    duration: float = typer.Option(3600.0, "--duration", help="seconds of trace to generate"),
    fmt: str = typer.Option("mooncake", "--format", help="mooncake | vllm-custom | burstgpt"),
    out: Path = typer.Option(..., "--out", help="output file"),
    window_s: float = typer.Option(600.0, "--window", help="fitting window (s)"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    save_model: Path = typer.Option(None, "--save-model", help="also save the fitted model"),
    db: Path = DbOption,
) -> None:
    """Fit a trace's arrivals (per window) and joint lengths, then sample a new trace."""
    from servecast.analytics import synth as sy
    from servecast.analytics.exports import REQUEST_FORMATS, write_requests
    from servecast.store import Store

    if fmt not in REQUEST_FORMATS:
        raise InvalidInputError(f"--format {fmt!r}: use one of {', '.join(REQUEST_FORMATS)}")
    if (source_trace is None) == (model_file is None):
        raise InvalidInputError("give exactly one of --from TRACE or --model FILE")
    if model_file is not None:
        model = sy.WorkloadModel.load(model_file)
    else:
        with Store(db, read_only=True) as store:
            model = sy.fit_workload(store, source_trace, window_s=window_s)
    if windows is not None:
        model.windows = sy.read_windows(windows)
    if save_model is not None:
        model.save(save_model)
    df = sy.synthesize(model, duration, rate_scale, seed=seed,
                       with_prefixes=model.reuse_quantiles is not None)
    path = write_requests(df, fmt, out)
    rate = df.height / duration
    console.print(f"[green]wrote[/] {df.height:,} requests ({rate:.3g} req/s over {duration:g} s, "
                  f"source {model.mean_rate:.3g} req/s x {rate_scale:g}) to {path} ({fmt})")


def export(
    trace: str = typer.Argument(..., help="trace name (see `servecast traces`)"),
    fmt: str = typer.Option(..., "--format", help="mooncake | vllm-custom | burstgpt | "
                            "servegen (per-window parameters)"),
    out: Path = typer.Option(..., "--out", help="output file (servegen: .csv or .json)"),
    window_s: float = typer.Option(600.0, "--window", help="servegen window (s)"),
    db: Path = DbOption,
) -> None:
    """Write a stored LLM trace as the replay tools read it: Mooncake JSONL (AIPerf,
    GuideLLM, vLLM), vLLM bench's custom dataset, BurstGPT CSV, or ServeGen-style
    per-window arrival parameters (read back by `servecast synth --windows`)."""
    from servecast.analytics.exports import FORMATS, export_trace
    from servecast.store import Store

    if fmt not in FORMATS:
        raise InvalidInputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if window_s <= 0:
        raise InvalidInputError(f"--window {window_s:g}: give a positive number of seconds")
    with Store(db, read_only=True) as store:
        path, n = export_trace(store, trace, fmt, out, window_s=window_s)
    what = "windows" if fmt == "servegen" else "requests"
    console.print(f"[green]wrote[/] {n:,} {what} of {trace} to {path} ({fmt})")
