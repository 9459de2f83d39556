"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from servecast.numbers import fmt

if TYPE_CHECKING:
    import polars as pl

#: output to a pipe or log file is 200 columns wide unless $COLUMNS says otherwise (rich's
#: 80-column default cut table cells and headers there: "kendall…", "calibrat…")
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)

#: help text is Markdown: single line breaks in docstrings are joined, `code` is shown as code
HELP_MARKUP = "markdown"

DbOption = typer.Option(
    None, "--db", help="DuckDB store file (default $SERVECAST_DB or ./servecast.duckdb)")
#: the engine settings of a deployment (`simulator.deployment.Deployment`) that simulate,
#: emulate, capacity and plan take alike
DtypeOption = typer.Option("bf16", "--dtype", help="bf16 | fp8 weights and GEMMs")
EngineOption = typer.Option("vllm", "--engine", help="engine family: vllm, sglang, trtllm "
                            "(its efficiency factor, and the overhead a --step-model fitted "
                            "for it)")
EfficiencyOption = typer.Option(None, "--efficiency", help="iteration time = step time / "
                                "efficiency (default: the engine family's)")
MaxSeqsOption = typer.Option(256, "--max-num-seqs", help="running requests per replica at "
                             "most")
KvDtypeOption = typer.Option("auto", "--kv-cache-dtype",
                             help="auto (2-byte KV) or fp8 (twice the KV tokens)")
StepModelOption = typer.Option(
    None, "--step-model", help="saved step_time model: learned operator residuals and the "
    "engine overhead fitted for the deployment's engine family (default: physics only)")


def print_frame(df: pl.DataFrame, title: str | None = None, max_rows: int = 50) -> None:
    """Print a polars frame as a rich table (numbers right-aligned, floats to 4 significant)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for name, dtype in df.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in df.head(max_rows).iter_rows():
        table.add_row(*(fmt(v, missing="") for v in row))
    console.print(table)
    if df.height > max_rows:
        console.print(f"... {df.height - max_rows} more rows")


def out_path(path: Path) -> Path:
    """Create the parent folder of an output file and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


#: the sub-command groups several areas add commands to
GROUPS = {
    "train": "Train a predictor on traces in the store.",
    "estimate": "Estimate with a trained predictor.",
    "collect": "Collect metrics on this host.",
}


def group(app: typer.Typer, name: str) -> typer.Typer:
    """The shared sub-command group `name` of `app` (one of GROUPS; created on first use)."""
    for info in app.registered_groups:
        if info.name == name:
            return info.typer_instance
    sub = typer.Typer(help=GROUPS[name], no_args_is_help=True, rich_markup_mode=HELP_MARKUP)
    app.add_typer(sub, name=name)
    return sub


FastOption = typer.Option(False, "--fast", help="the fast preset (demo settings): options "
                          "not given take its values instead of the full preset's")


def given(ctx: typer.Context, **values):
    """The subset of `values` (option name -> value) set on the command line, not left at
    their default: what overrides a preset (`Preset.pick(fast, **given(ctx, ...))`)."""
    # by name: typer may vendor its own click, whose ParameterSource is another enum
    sources = {k: getattr(ctx.get_parameter_source(k), "name", "DEFAULT") for k in values}
    return {k: v for k, v in values.items() if sources[k] not in ("DEFAULT", "DEFAULT_MAP")}
