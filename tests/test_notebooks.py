"""The notebooks in notebooks/ execute top to bottom on the real data (nbclient, real kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow  # real-data fixtures and model training (> 5 s)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch, data):
    monkeypatch.setenv("SERVECAST_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("SERVECAST_NOTEBOOK_QUICK", "1")  # smaller slices, every cell still runs
    monkeypatch.setenv("SERVECAST_DATA", str(data))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own (inline) backend
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert any(c.get("outputs") for c in book.cells if c.cell_type == "code")
    # every cell that ends with a figure shows it once, as an image (not "<Figure ...>")
    for cell in book.cells:
        shown = [o for o in cell.get("outputs", []) if "data" in o]
        figures = [o for o in shown if o["data"].get("text/plain", "").startswith("<Figure")]
        assert all("image/png" in o["data"] for o in figures), cell.source
        assert len(figures) <= 1, cell.source


def test_notebooks_exist():
    assert {p.stem.split("_", 1)[1] for p in NOTEBOOKS} >= {"quickstart"}


def test_topic_notebooks_match_build_py_and_read_quick():
    """02-05 hold exactly the cells notebooks/build.py writes (edit build.py, then rerun it),
    and each reads SERVECAST_NOTEBOOK_QUICK, the setting the test above runs them with."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_build", NOTEBOOKS[0].parent / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert set(build.NOTEBOOKS) == {p.stem for p in NOTEBOOKS[1:]}
    for name, cells in build.NOTEBOOKS.items():
        book = nbformat.read(NOTEBOOKS[0].parent / f"{name}.ipynb", as_version=4)
        want = build.build(name, cells)
        assert [(c.cell_type, c.source) for c in book.cells] == [
            (c.cell_type, c.source) for c in want.cells], f"{name}: run notebooks/build.py"
        code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
        assert "SERVECAST_NOTEBOOK_QUICK" in code and code.count("if QUICK") >= 1, name
