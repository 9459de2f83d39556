"""`servecast dashboard`: the Streamlit app (app/Home.py + app/pages/) on a store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from servecast.commands.common import DbOption, console
from servecast.config import db_path
from servecast.errors import ServecastError


def register(app: typer.Typer) -> None:
    app.command()(dashboard)


def home_path() -> Path:
    """The dashboard's entry script (installed as servecast.app)."""
    import servecast.app

    return Path(servecast.app.__file__).parent / "Home.py"


def dashboard(
    db: Path = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
    port: int = typer.Option(8501, "--port", help="TCP port"),
) -> None:
    """Open the dashboard on the store (read-only; ingest from its Home page)."""
    path = db_path(db).resolve()
    if not path.exists():
        raise ServecastError(f"{path}: no store here; ingest a trace first "
                             "(`servecast ingest ...` or `servecast demo`) or pass --db")
    env = {**os.environ, "SERVECAST_DB": str(path)}
    cmd = [sys.executable, "-m", "streamlit", "run", str(home_path()),
           "--server.address", host, "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    console.print(f"dashboard on http://{host}:{port} (store {path}); Ctrl-C stops it")
    try:
        raise typer.Exit(subprocess.call(cmd, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
