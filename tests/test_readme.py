"""The README's newcomer path works exactly as written: a reduced demo (`servecast demo --only
llm`, the area the examples use) in a project-like folder, then the CLI tour's commands and
every ```python example block of README.md, each asserted to exit 0. The demo's printed next
commands are run as printed too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
VENV = Path(sys.executable).parent.parent
#: tour lines that need the network (documented "when online"): not run here
ONLINE = ("datasets download",)


def blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def tour_commands() -> list[str]:
    [tour] = blocks("bash", section("A 5-minute tour of the CLI"))
    lines = [ln.strip() for ln in tour.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")
            and not any(o in ln for o in ONLINE)]


def run(cmd: list[str] | str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SERVECAST_DB", "SERVECAST_OUT", "SERVECAST_DATA", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p).resolve() != (VENV / "bin").resolve())
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory, data):
    """tmp/project (with .venv linked to this venv) next to tmp/shared/datasets, after
    `.venv/bin/servecast demo --only llm` ran in it with the default store and out dir."""
    base = tmp_path_factory.mktemp("newcomer")
    (base / "shared").mkdir()
    (base / "shared" / "datasets").symlink_to(data.resolve())
    project = base / "project"
    project.mkdir()
    (project / ".venv").symlink_to(VENV)
    r = run([".venv/bin/servecast", "demo", "--only", "llm"], project)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return project, r.stdout


def test_tour_is_extracted():
    cmds = tour_commands()
    assert cmds[0] == "source .venv/bin/activate"
    assert any(c.startswith("servecast info ") for c in cmds)
    assert len(blocks("python")) >= 2


@pytest.mark.slow
def test_cli_tour_runs_as_written_after_the_demo(demo_project):
    project, _ = demo_project
    for cmd in tour_commands()[1:]:
        r = run(["bash", "-c", f"source .venv/bin/activate && {cmd}"], project)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    info = run(["bash", "-c", "source .venv/bin/activate && servecast info azure_conv"], project)
    assert "19,366" in info.stdout or "19366" in info.stdout


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1])
def test_python_examples_run_as_written_after_the_demo(demo_project, index):
    project, _ = demo_project
    code = blocks("python")[index]
    r = run([sys.executable, "-c", code], project)
    assert r.returncode == 0, f"{code}\n{r.stderr[-3000:]}"


@pytest.mark.slow
def test_printed_next_commands_run_as_printed(demo_project):
    project, out = demo_project
    printed = out[out.index("next"):].splitlines()
    assert "source .venv/bin/activate" in printed[0]
    cmds = [ln.strip() for ln in printed[1:] if ln.startswith("  ")]
    assert cmds and all(c.startswith(".venv/bin/servecast ") for c in cmds)
    for cmd in cmds:
        if " dashboard" in cmd or " serve " in cmd:  # servers: check their arguments only
            cmd = f"{cmd} --help"
        r = run(["bash", "-c", cmd], project)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
