"""Where things live: the store file and the shared real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "servecast.duckdb"


def db_path(path: str | os.PathLike | None = None) -> Path:
    """The store file: `path`, else `$SERVECAST_DB`, else `./servecast.duckdb`."""
    return Path(path or os.environ.get("SERVECAST_DB") or DEFAULT_DB)


def data_dir() -> Path:
    """The real-data folder: `$SERVECAST_DATA`, else `../shared/datasets` from the project root."""
    env = os.environ.get("SERVECAST_DATA")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parent.parent
    for cand in (root.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"):
        if cand.is_dir():
            return cand
    return root.parent / "shared" / "datasets"
