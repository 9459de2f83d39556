"""`servecast dashboard`: the Streamlit app (app/Home.py + app/pages/) on a store.

Streamlit runs as a child process in its own process group. SIGTERM, SIGINT (Ctrl-C) and
SIGHUP to `servecast dashboard` stop that whole group (SIGTERM, then SIGKILL after
STOP_GRACE_S), so no server outlives the command holding the port or the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import typer

from servecast.commands.common import DbOption, console
from servecast.config import db_path
from servecast.errors import ServecastError

#: seconds the child gets to exit after SIGTERM before it is killed
STOP_GRACE_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(Exception):
    """A stop signal arrived while the child ran."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it after STOP_GRACE_S; reap the child."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def run_group(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run `cmd` in a new process group until it exits; its exit status. A stop signal to
    this process stops the group and returns 0."""
    old = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
    proc = None
    try:
        proc = subprocess.Popen(list(cmd), env=dict(env), start_new_session=True)
        return proc.wait()
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        for sig in _STOP_SIGNALS:  # no second signal interrupts the shutdown
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None and proc.poll() is None:
            _stop_group(proc)
        for sig, handler in old.items():
            signal.signal(sig, handler)


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
    """Open the dashboard on the store (read-only; ingest from its Home page). SIGTERM or
    Ctrl-C stops it with its Streamlit server."""
    path = db_path(db).resolve()
    if not path.exists():
        raise ServecastError(f"{path}: no store here; ingest a trace first "
                             "(`servecast ingest ...` or `servecast demo`) or pass --db")
    env = {**os.environ, "SERVECAST_DB": str(path)}
    cmd = [sys.executable, "-m", "streamlit", "run", str(home_path()),
           "--server.address", host, "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    console.print(f"dashboard on http://{host}:{port} (store {path}); Ctrl-C stops it")
    raise typer.Exit(run_group(cmd, env))
