"""`servecast serve`: the HTTP estimate service (FastAPI on uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import console
from servecast.service.limits import ServeLimits


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    models: Path = typer.Option(..., "--models", help="models dir written by `servecast train`"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
    read_timeout: float = typer.Option(
        ServeLimits.read_timeout_s, "--read-timeout", min=0.1,
        help="seconds a client has to send a whole request (else 408, connection closed)"),
    keep_alive: int = typer.Option(ServeLimits.keep_alive_s, "--keep-alive", min=1,
                                   help="seconds an idle keep-alive connection stays open"),
    max_connections: int = typer.Option(
        ServeLimits.max_connections, "--max-connections", min=1,
        help="open connections + requests in flight; beyond it: 503"),
) -> None:
    """Serve estimates over HTTP: POST /v1/output-length, /v1/kernel-latency,
    /v1/interference, /v1/moe-congestion; GET /healthz; schema at /docs (works offline).
    A models dir that fails to load exits 2 with the file named."""
    from servecast.service.app import create_app
    from servecast.service.limits import run_uvicorn

    app = create_app(models)
    kinds = ", ".join(app.state.estimator.kinds)
    console.print(f"serving {kinds} from {models} on http://{host}:{port} (docs: /docs)")
    run_uvicorn(app, host, port, log_level, ServeLimits(read_timeout, keep_alive,
                                                        max_connections))
