"""The layers the code enforces: the import-linter contracts of pyproject.toml
([tool.importlinter]) hold for the source tree (`lint-imports`, as `make test` runs it).

The project maps sub-packages to top-level folders (pyproject's package-dir), which
import-linter cannot follow, so the test lays the package out as the wheel does (a copy of
the .py files under tmp/servecast) and lints that."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_tree(dest: Path, root: Path = ROOT) -> Path:
    """Copy the package's .py files into dest/servecast/... as installed; returns dest."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text())
    mapping = cfg["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        target = dest.joinpath(*package.split("."))
        shutil.copytree(root / folder, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.j2"))
    return dest


def lint_imports(root: Path, tmp: Path) -> subprocess.CompletedProcess:
    tree = package_tree(tmp / "tree", root)
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports({str(root / 'pyproject.toml')!r}, no_cache=True, "
            "no_logo=True))")
    env = os.environ | {"PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", code], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_hold(tmp_path):
    res = lint_imports(ROOT, tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in res.stdout
