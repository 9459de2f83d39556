"""tests/conftest.py's session fixtures are built once per test run for all pytest-xdist
workers (`run_once`), as `make test` runs them: two test files on two workers ask for the
same fixtures, one builds, both read the same folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

#: a test file run on its own worker: what it saw, as one JSON line per file
PROBE = '''
import json, os
from pathlib import Path

from conftest import run_once


def test_probe(tmp_path_factory, fitted_kind):
    def build(folder):
        with open(os.environ["BUILDS_LOG"], "a") as log:
            log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
        (folder / "value").write_text("built")

    folder = run_once(tmp_path_factory, "probe", build)
    fx, model, out, path = fitted_kind("moe_congestion")
    assert out is model and model.is_fitted
    seen = {"worker": os.environ["PYTEST_XDIST_WORKER"], "folder": str(folder),
            "value": (folder / "value").read_text(), "model": str(path),
            "predict": model.predict(fx.test).to_dicts()}
    with open(os.environ["SEEN_LOG"], "a") as log:
        log.write(json.dumps(seen, default=str) + "\\n")
'''


@pytest.mark.slow
def test_session_fixtures_are_built_once_for_all_workers(tmp_path):
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(PROBE)
    builds, seen = tmp_path / "builds.log", tmp_path / "seen.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env.update(PYTHONPATH=str(TESTS), BUILDS_LOG=str(builds), SEEN_LOG=str(seen))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
         "-n", "2", "--dist", "loadfile", "--basetemp", str(tmp_path / "base"),
         "test_a.py", "test_b.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [json.loads(line) for line in seen.read_text().splitlines()]
    assert sorted(r["worker"] for r in rows) == ["gw0", "gw1"]  # one file on each worker
    assert builds.read_text().splitlines() in (["gw0"], ["gw1"])  # built by one of them
    # both read the one folder of the run (outside each worker's own base temp dir)
    assert rows[0]["folder"] == rows[1]["folder"] == str(tmp_path / "base" / "once-probe")
    assert rows[0]["value"] == rows[1]["value"] == "built"
    assert rows[0]["model"] == rows[1]["model"]
    assert Path(rows[0]["model"]).parent == tmp_path / "base" / "once-fitted-moe_congestion"
    assert rows[0]["predict"] == rows[1]["predict"]
