"""`servecast demo`: the main job on the shared real data (ingest -> ... -> summary)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from servecast.commands.common import DbOption, console, print_frame

#: servecast.pipelines.demo.AREAS (not imported here: the CLI starts without polars/DuckDB imports)
AREA_NAMES = "llm, cluster, kernels, interference, moe"


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    db: Path = DbOption,
    data: Path = typer.Option(None, "--data", help="real-data folder (default ../shared/datasets)"),
    out: Path = typer.Option(Path("out"), "--out", help="folder for reports and models"),
    only: str = typer.Option("", "--only", help=f"comma-separated areas to run ({AREA_NAMES})"),
    threads: int = typer.Option(1, "--threads", min=1,
                                help="CPU threads per library (torch, OpenMP, BLAS)"),
    skip: str = typer.Option("", "--skip",
                             help=f"comma-separated areas to leave out ({AREA_NAMES})",),
) -> None:
    """The main job on the shared data: ingest, characterize + report, train every predictor
    (fast settings) into OUT/models, then print the report path and the next commands.
    --only / --skip pick areas: llm, cluster, kernels, interference, moe."""
    # before torch / LightGBM / BLAS load: their OpenMP pools read it once (see DEMO_THREADS)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from servecast.pipelines.demo import run_demo, select_areas

    areas = select_areas(_names(only), _names(skip))
    store = run_demo(db=db, data=data, out=out, log=lambda s: console.print(s, soft_wrap=True),
                     show=lambda df, title: print_frame(df, title=title), areas=areas,
                     threads=threads)
    store.close()


def _names(csv: str) -> list[str]:
    return [n.strip() for n in csv.split(",") if n.strip()]
