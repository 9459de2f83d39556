"""`servecast demo`: the main job on the shared real data (ingest -> ... -> summary)."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import DbOption, console, print_frame


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    db: Path = DbOption,
    data: Path = typer.Option(None, "--data", help="real-data folder (default ../shared/datasets)"),
    out: Path = typer.Option(Path("out"), "--out", help="folder for reports and models"),
) -> None:
    """The main job on the shared data: ingest, characterize + report, train every predictor
    (fast settings) into OUT/models, then print the report path and the next commands."""
    from servecast.demo import run_demo

    store = run_demo(db=db, data=data, out=out, log=lambda s: console.print(s, soft_wrap=True),
                     show=lambda df, title: print_frame(df, title=title))
    store.close()
