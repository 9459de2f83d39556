"""`servecast` command line. Core commands live here; each area adds its own in
`servecast/commands/<area>.py` (a `register(app)` function listed in COMMAND_MODULES).

User errors print one message and exit 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from servecast.commands.common import HELP_MARKUP
from servecast.errors import ServecastError
from servecast.registry import modules

#: modules under servecast.commands that add commands to the app
COMMAND_MODULES = ["store", "demo", "serve", "dashboard", "analytics", "output_length", "moe",
                   "kernel_latency", "interference", "gpus",
                   "step_time", "capacity",
                   "simulate",
                   "emulate"]

app = typer.Typer(
    name="servecast",
    help="LLM-serving and GPU-cluster traces: ingest, characterize, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=HELP_MARKUP,
)

for _module in modules("servecast.commands", COMMAND_MODULES):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; usage errors exit 2 (click's standalone mode), user errors
    (ServecastError) print one line and exit 2."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except ServecastError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        return 2
    return 0


def run() -> None:
    """Console-script entry point (`servecast`)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
