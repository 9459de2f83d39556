"""The kernel benchmarks on a `--db` that is not a store (`kernel_latency_logo.open_store`):
a clear error naming the file and the fix, exit 2, no traceback, nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, source, args", [
    ("kernel_latency_help.py", "help-nasbench201", ["--epochs", "1"]),
    ("kernel_latency_logo.py", "neusight", ["--epochs", "1"]),
    ("operator_latency_logo.py", "aiconfigurator", []),
])
def test_missing_store_exits_2_naming_the_file_and_the_fix(tmp_path, script, source, args):
    db = tmp_path / "new" / "store.duckdb"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script),
                          "--db", str(db), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert str(db) in out.stderr
    assert f"servecast ingest {source} " in out.stderr and f"--db {db}" in out.stderr
    assert not db.parent.exists()  # nothing half-written
