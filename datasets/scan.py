"""One pass over a source file's bytes, independent of DuckDB's reader: its sha256, the
number of records it holds and the lines too long to hand to the reader.

The store compares `records` with the accepted + rejected rows an adapter reports, so a row
the reader drops without a trace (DuckDB 2.0's CSV reader can, after a run of long lines)
refuses the ingest instead of vanishing. Counting rules match DuckDB's reader: lines end at
`\\n`, `\\r\\n` or `\\r`; empty lines are no records; a CSV's line breaks inside double quotes
do not end a record and its first record is the header. A plain file is hashed and counted in
the same read at memory speed (bytes.count); quoted CSV text costs one split per quote.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

#: a line longer than this (bytes) is rejected up front and never reaches DuckDB's reader
MAX_LINE_BYTES = 256 * 1024

#: how much of an over-long line `rejected_rows.content` keeps (characters)
CONTENT_PREFIX = 200

_EMPTY = re.compile(rb"\n(?=\n)")  # a line break followed by another: one empty line

#: files at least this large (bytes) count their line breaks with numpy, several times
#: faster than bytes.count; below it importing numpy would cost more than it saves
VECTOR_COUNT_BYTES = 256 << 20


def _breaks_vector(text: bytes) -> int:
    """Line breaks (LF) in `text`, counted with numpy."""
    import numpy as np

    return int(np.count_nonzero(np.frombuffer(text, np.uint8) == 10))


@dataclass
class FileScan:
    """What the scan found. `records`: data records (CSV header excluded; None for formats
    the adapter accounts for itself, e.g. a JSON document). `long_lines`: (line, bytes,
    first characters) of every line over MAX_LINE_BYTES."""

    sha256: str
    records: int | None
    long_lines: list[tuple[int, int, str]] = field(default_factory=list)
    exact: bool = True  # False: `records` counts blank lines too (an upper bound)


def record_kind(path: Path) -> str | None:
    """'csv', 'lines' (JSONL) or None (a document format counted by its adapter)."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".jsonl"):
        return "lines"
    return None


class _Counter:
    """Streaming record and line counter (state carried across chunks)."""

    def __init__(self, quoted: bool, limit: int, exact: bool, vector: bool = False):
        self.quoted, self.limit, self.exact = quoted, limit, exact
        self.breaks = _breaks_vector if vector else lambda text: text.count(b"\n")
        self.in_quote = False
        self.records = 0  # non-empty records ended so far
        self.content = False  # the current record has content
        self.line = 1  # physical line number at the current position
        self.line_len = 0  # bytes of the current physical line so far
        self.long: dict[int, int] = {}  # line -> bytes, for lines over the limit
        self.pline = 1  # physical line, as the quote parser advances
        self.quoted_breaks: list[tuple[int, int]] = []  # (physical line, breaks inside quotes)
        self.carry = b""  # a trailing \r held back until the next block

    def feed(self, text: bytes) -> None:
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        breaks = self.breaks(text)
        self._lengths(text)
        self.line += breaks
        if not self.quoted or (b'"' not in text and not self.in_quote):
            self._outside(text, breaks)
            self.pline += breaks
            return
        for i, part in enumerate(text.split(b'"')):
            if i:  # the quote itself is record content
                self.in_quote = not self.in_quote
                self.content = True
            n = part.count(b"\n")
            if not self.in_quote:
                self._outside(part, n)
            elif n:
                self.quoted_breaks.append((self.pline, n))
            self.pline += n

    def record_line(self, physical: int) -> int:
        """The reader's line number of a physical line: DuckDB counts records (blank lines
        included), so a line break inside quotes does not advance it."""
        return physical - sum(n for line, n in self.quoted_breaks if line < physical)

    def feed_block(self, block: bytes, last: bool = False) -> None:
        """Feed the next bytes of the file (`last`: the file ended)."""
        if self.carry:
            block, self.carry = self.carry + block, b""
        if block.endswith(b"\r") and not last:  # keep a \r\n pair together
            block, self.carry = block[:-1], b"\r"
        self.feed(block)

    def _outside(self, text: bytes, breaks: int | None = None) -> None:
        breaks = text.count(b"\n") if breaks is None else breaks
        if not breaks:
            self.content = self.content or bool(text)
            return
        if self.exact:
            first = text.find(b"\n")
            empty = len(_EMPTY.findall(text)) if b"\n\n" in text else 0
            self.records += breaks - empty - (0 if self.content or first > 0 else 1)
        else:  # every line break ends a record: an upper bound (blank lines hold none)
            self.records += breaks
        self.content = not text.endswith(b"\n")

    def _lengths(self, text: bytes) -> None:
        """Find lines over the limit with one rfind per `limit` bytes (`self.line` is the
        line at the chunk's start; the caller advances it)."""
        p, n = 0, len(text)
        while p < n:
            window = p + max(self.limit - self.line_len, 0) + 1
            i = text.rfind(b"\n", p, window)
            if i >= 0:
                self.line_len, p = 0, i + 1
                continue
            if window > n:  # no break before the chunk ends
                self.line_len += n - p
                if self.line_len > self.limit:  # rare: a long line (count only then)
                    self.long[self.line + text.count(b"\n", 0, p)] = self.line_len
                return
            line = self.line + text.count(b"\n", 0, p)  # rare: a long line
            j = text.find(b"\n", p)
            end = n if j < 0 else j
            self.long[line] = self.line_len + end - p
            if j < 0:
                self.line_len += n - p
                return
            self.line_len, p = 0, j + 1

    def finish(self) -> int:
        return self.records + int(self.content)


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def scan_file(path: Path, chunk: int = 1 << 22, limit: int = MAX_LINE_BYTES,
              exact: bool = False, vector_from: int = VECTOR_COUNT_BYTES,
              line_records: bool = True) -> FileScan:
    """Hash `path` and count its records (see the module docstring). A gzip file is hashed
    as stored and counted decompressed; a corrupt stream leaves `records` None (the reader
    reports it). Without `exact`, blank lines are counted as records (finding them costs as
    much as the rest of the scan): `records` is then an upper bound, exact for a file
    without blank lines; `exact_records` gives the exact count when it is needed. A file of
    `vector_from` bytes or more counts its line breaks with numpy (same counts). Without
    `line_records` (an adapter whose files are documents whatever their name) the file is
    only hashed, as a JSON document is."""
    h = hashlib.sha256()
    kind = record_kind(path) if line_records else None
    plain = not path.name.endswith(".gz")
    counter = _Counter(quoted=kind == "csv", limit=limit, exact=exact,
                       vector=path.stat().st_size >= vector_from) if kind else None
    with open(path, "rb") as fh:  # a plain file is hashed and counted in one read
        while block := fh.read(chunk):
            h.update(block)
            if counter and plain:
                counter.feed_block(block)
    if counter is None:
        return FileScan(h.hexdigest(), None)
    if not plain:
        try:
            with _open(path) as fh:
                while block := fh.read(chunk):
                    counter.feed_block(block)
        except (OSError, EOFError, zlib.error):
            return FileScan(h.hexdigest(), None)
    counter.feed_block(b"", last=True)
    records = counter.finish() - (1 if kind == "csv" else 0)
    long = [(counter.record_line(line), size, _line_prefix(path, line))
            for line, size in counter.long.items()]
    return FileScan(h.hexdigest(), max(records, 0), long, exact)


def exact_records(path: Path, scan: FileScan) -> int | None:
    """The exact record count of a scanned file (a second pass unless `scan` was exact)."""
    return scan.records if scan.exact else scan_file(path, exact=True).records


def _line_prefix(path: Path, line: int) -> str:
    """The first CONTENT_PREFIX characters of physical `line` of `path`."""
    with _open(path) as fh:
        for i, raw in enumerate(fh, start=1):
            if i == line:
                return raw[: CONTENT_PREFIX * 4].decode("utf-8", errors="replace")[
                    :CONTENT_PREFIX]
    return ""


def _line_break(raw: bytes) -> bytes:
    """The line break that ends `raw` (kept when a line is blanked: a lone LF among CRLF
    lines made DuckDB's reader number the lines after it differently)."""
    return raw[len(raw.rstrip(b"\r\n")):] or b"\n"


def without_lines(path: Path, lines: set[int], folder: Path) -> Path:
    """A copy of `path` in `folder` (same name, same compression) whose `lines` are empty:
    the reader skips them and keeps counting lines, so its line numbers stay the source's."""
    out = folder / path.name
    opener = gzip.open if path.name.endswith(".gz") else open
    with _open(path) as src, opener(out, "wb") as dst:
        if not lines:
            shutil.copyfileobj(src, dst)
        for i, raw in enumerate(src, start=1):
            dst.write(_line_break(raw) if i in lines else raw)
    return out
