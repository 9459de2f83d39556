"""`servecast serve`: the HTTP estimate service (FastAPI on uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import console


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    models: Path = typer.Option(..., "--models", help="models dir written by `servecast train`"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve estimates over HTTP: POST /v1/output-length, /v1/kernel-latency,
    /v1/interference, /v1/moe-congestion; GET /healthz; schema at /docs."""
    import uvicorn

    from servecast.service import create_app

    app = create_app(models)
    kinds = ", ".join(app.state.estimator.kinds)
    console.print(f"serving {kinds} from {models} on http://{host}:{port} (docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
