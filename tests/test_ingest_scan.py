"""The record count of the scan is the same whichever way it counts line breaks (numpy for
large files, bytes.count below `VECTOR_COUNT_BYTES`), on real and awkward files."""

from __future__ import annotations

import gzip

import pytest

from servecast.datasets.catalog import shared_path
from servecast.datasets.scan import MAX_LINE_BYTES, scan_file

AWKWARD = {
    "crlf.csv": b"a,b\r\n1,2\r\n\r\n3,4\r\n",
    "cr.csv": b"a,b\r1,2\r3,4",
    "quoted.csv": b'a,b\n1,"two\nlines"\n\n"x",3\n',
    "long.csv": b"a,b\n" + b"1," + b"x" * (MAX_LINE_BYTES + 10) + b"\n2,3\n",
    "lines.jsonl": b'{"a": 1}\n\n{"a": 2}\n{"a": 3}',
}


@pytest.mark.parametrize("name", sorted(AWKWARD))
@pytest.mark.parametrize("exact", [False, True])
def test_vector_count_matches_bytes_count(tmp_path, name, exact):
    f = tmp_path / name
    f.write_bytes(AWKWARD[name])
    gz = tmp_path / (name + ".gz")
    gz.write_bytes(gzip.compress(AWKWARD[name]))
    for path in (f, gz):
        plain = scan_file(path, exact=exact, vector_from=1 << 62, chunk=7)
        vector = scan_file(path, exact=exact, vector_from=0, chunk=7)
        assert vector == plain
        assert plain.records is not None and plain.records >= 2


def test_vector_count_on_real_traces(data):
    for rel in ("llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
                "llm/burstgpt"):
        path = shared_path(rel, data)
        files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
        for f in files:
            plain = scan_file(f, vector_from=1 << 62)
            assert scan_file(f, vector_from=0) == plain
            assert plain.records == sum(1 for _ in open(f, "rb")) - 1  # no blank lines


def test_a_document_adapters_file_is_only_hashed(tmp_path):
    """A `.jsonl` that an adapter reads as one document (a bench result a line) gets no
    record count and no over-long lines for the store to cut out; the hash is the same."""
    f = tmp_path / "result.jsonl"
    f.write_text('{"ttfts": [0.1, 0.2]}\n' + '{"ttfts": [' + "0.3, " * 40 + '0.4]}\n')
    lines = scan_file(f, limit=64)
    doc = scan_file(f, limit=64, line_records=False)
    assert lines.records == 2 and len(lines.long_lines) == 1
    assert doc.records is None and doc.long_lines == [] and doc.sha256 == lines.sha256
