"""The notebooks in notebooks/ execute top to bottom on the real data (nbclient, real kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch, data):
    monkeypatch.setenv("SERVECAST_NOTEBOOK_OUT", str(tmp_path))
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
