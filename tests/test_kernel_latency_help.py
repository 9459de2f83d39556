"""benchmarks/kernel_latency_help.py on a `--db` that is not a store: a clear error naming
the file and the fix, exit 2, no traceback, nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_missing_store_exits_2_naming_the_file_and_the_fix(tmp_path):
    db = tmp_path / "new" / "help.duckdb"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_latency_help.py"),
                          "--db", str(db), "--epochs", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert str(db) in out.stderr
    assert "servecast ingest help-nasbench201 " in out.stderr and f"--db {db}" in out.stderr
    assert not db.parent.exists()  # nothing half-written
