"""Packaging: every sub-package is installed under `servecast.*`, CI runs the README command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"servecast": "servecast", "datasets": "servecast.datasets",
          "analytics": "servecast.analytics", "predictors": "servecast.predictors",
          "app": "servecast.app"}


def test_every_package_is_listed():
    """Every importable folder, data-only ones included (report templates, dashboard pages):
    setuptools warns that an unlisted one "would be ignored" and will drop it."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in MAPPED.items():
        for folder in [ROOT / top, *(ROOT / top).rglob("*")]:
            rel = folder.relative_to(ROOT / top)
            if folder.is_dir() and all(p.isidentifier() and p != "__pycache__" for p in rel.parts):
                found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_no_top_level_datasets_module():
    # `datasets` belongs to another well-known package; ours is servecast.datasets only
    out = subprocess.run([sys.executable, "-c", "import servecast.datasets, sys; "
                          "print('datasets' in sys.modules)"], capture_output=True, text=True,
                         cwd="/", check=True)
    assert out.stdout.strip() == "False"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make test" in (ROOT / "README.md").read_text()
