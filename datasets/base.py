"""The adapter protocol: how a source format is found on disk, described, and loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from servecast.errors import DataFileError

Counts = dict[Path, tuple[int, int]]  # file -> (accepted rows, rejected rows)


class Restage(Exception):
    """Raised by an adapter's one-pass load of `files` when a file is not clean (a row the
    one pass would not store as it is): the store rolls the ingest back and reruns it with
    those files read through the stage, which finds each bad row and its reason."""

    def __init__(self, *files: Path):
        super().__init__(", ".join(map(str, files)))
        self.files = set(files)


def stem(path: Path) -> str:
    """File name without `.gz`/`.csv`/`.json`/`.jsonl`/`.parquet` suffixes."""
    name = path.name
    for suffix in (".gz", ".csv", ".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name


@dataclass(frozen=True)
class Catalog:
    """What `servecast datasets` shows for an adapter."""

    format: str  # expected columns / layout
    url: str  # official download location
    license: str
    citation: str
    download: str | None = None  # direct URL for `servecast datasets download`


class Adapter:
    """One source format. Subclasses set the class attributes and implement `load`."""

    name: ClassVar[str]
    table: ClassVar[str]  # primary canonical table
    patterns: ClassVar[tuple[str, ...]] = ("*.csv", "*.csv.gz")  # files found in a folder
    per_file_traces: ClassVar[bool] = True  # each file its own trace unless --trace
    #: False where a file is one document whatever its name (a `.jsonl` holding one JSON
    #: result a line is not one record a line): the scan only hashes it (no record count,
    #: no over-long line taken out) and the adapter's own row count stands
    line_records: ClassVar[bool] = True
    catalog: ClassVar[Catalog]

    def files(self, paths: list[Path]) -> list[Path]:
        """Expand folders (recursively, by `patterns`) and check every file exists."""
        out: list[Path] = []
        for p in paths:
            if p.is_dir():
                found = sorted({f for pat in self.patterns for f in p.rglob(pat) if f.is_file()})
                if not found:
                    raise DataFileError(
                        f"{p}: no {' or '.join(self.patterns)} files in this folder for "
                        f"adapter {self.name!r}; point at the files or the right folder"
                    )
                out += found
            elif p.is_file():
                out.append(p)
            else:
                raise DataFileError(f"{p}: no such file or folder; check the path")
        for f in out:
            if f.stat().st_size == 0:
                raise DataFileError(
                    f"{f}: line 1: the file is empty; expected {self.catalog.format}")
        return out

    def group(self, files: list[Path], trace: str | None) -> dict[str, list[Path]]:
        """Trace name -> files. Default: one trace per file, named after it."""
        if trace:
            return {trace: files}
        if self.per_file_traces:
            groups: dict[str, list[Path]] = {}
            for f in files:
                groups.setdefault(stem(f), []).append(f)
            return groups
        return {self.default_group_name(files): files}

    def default_group_name(self, files: list[Path]) -> str:
        """Name of the folder the files share (a single file: its stem)."""
        if len(files) == 1:
            return stem(files[0])
        return Path(os.path.commonpath([str(f.resolve()) for f in files])).name

    def load(self, ctx, files: list[Path]) -> Counts:  # pragma: no cover - interface
        """Insert the rows of `files` into the canonical tables; return per-file counts."""
        raise NotImplementedError
