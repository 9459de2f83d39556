"""`servecast demo`'s pieces: area selection (--only / --skip), the per-area ingest, the
per-epoch progress lines of a real Lightning fit, and next commands that name this venv's
CLI. The whole reduced demo runs in tests/test_readme.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from servecast.errors import InvalidInputError
from servecast.pipelines import demo

SERVECAST = Path(sys.executable).parent / "servecast"


def test_select_areas_only_skip_and_errors():
    assert demo.select_areas() == list(demo.AREAS)
    assert demo.select_areas(["moe", "llm"]) == ["llm", "moe"]  # run order, not flag order
    assert demo.select_areas(skip=["interference", "moe"]) == ["llm", "cluster", "kernels"]
    assert demo.select_areas(["llm", "moe"], ["moe"]) == ["llm"]
    with pytest.raises(InvalidInputError, match=r"--only: unknown demo area 'gpu'; one of llm"):
        demo.select_areas(["gpu"])
    with pytest.raises(InvalidInputError, match="--skip: unknown demo area 'x'"):
        demo.select_areas(skip=["x"])
    with pytest.raises(InvalidInputError, match="leave no demo area"):
        demo.select_areas(["moe"], ["moe"])


def test_cli_rejects_an_unknown_area_with_exit_2(tmp_path, capsys):
    from servecast.cli import main  # in-process: the refusal, not the interpreter start

    assert main(["demo", "--skip", "llm,bogus", "--db", str(tmp_path / "d.duckdb"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--skip: unknown demo area 'bogus'" in err and "Traceback" not in err
    assert not (tmp_path / "d.duckdb").exists()  # refused before touching anything


def test_ingest_loads_only_the_chosen_areas(tmp_store, data):
    lines: list[str] = []
    demo.ingest_shared(tmp_store, data, lines.append, ["moe"])
    assert tmp_store.traces()["trace"].to_list() == ["olmoe_routing"]
    assert len(lines) == 1 and "2,339 rows" in lines[0]


@pytest.mark.slow  # importing Lightning + torch: ~10 s on a loaded 2-core machine
def test_epoch_lines_log_every_epoch_of_a_real_fit():
    import pytorch_lightning as lightning
    import torch

    from servecast.predictors.training import make_trainer

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.w(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(32, 2)
    loader = torch.utils.data.DataLoader(list(zip(x, x.sum(1, keepdim=True), strict=True)),
                                         batch_size=8)
    lines: list[str] = []
    with demo.epoch_lines(lines.append):
        make_trainer(max_epochs=3, progress=False).fit(Tiny(), loader)
        make_trainer(max_epochs=1, max_steps=20, progress=False).fit(Tiny(), loader)
    epochs = [ln.strip().split("  ")[0] for ln in lines]
    assert epochs[:3] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "loss" in lines[0]
    assert epochs[3:] == ["step 2/20", "step 4/20"]  # 4 batches in the one epoch
    lines.clear()
    make_trainer(max_epochs=1, progress=False).fit(Tiny(), loader)  # outside: restored
    assert lines == []


def test_next_commands_use_the_venv_cli_and_the_demo_paths(tmp_path, monkeypatch):
    from servecast.store import Store

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SERVECAST_DB", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not activated
    with Store(tmp_path / "other.duckdb") as s:
        cmds = demo.next_commands(s, tmp_path / "elsewhere", ["llm"])
    cli = str(SERVECAST)
    assert cmds == [f"{cli} traces --db {tmp_path / 'other.duckdb'}",
                    f"{cli} info azure_conv --db {tmp_path / 'other.duckdb'}",
                    f"SERVECAST_OUT={tmp_path / 'elsewhere'} {cli} dashboard --db "
                    f"{tmp_path / 'other.duckdb'}",
                    f"{cli} serve --models {tmp_path / 'elsewhere' / 'models'}"]
    monkeypatch.setenv("PATH", str(SERVECAST.parent))  # activated: plain `servecast`
    with Store(tmp_path / "servecast.duckdb") as s:
        cmds = demo.next_commands(s, Path("out"), ["cluster"])
        assert cmds == ["servecast traces", "servecast dashboard"]
        monkeypatch.setenv("SERVECAST_DB", str(tmp_path / "servecast.duckdb"))
        cmds = demo.next_commands(s, Path("my out"), ["moe"])  # a new shell may lack the env
    db = f"--db {tmp_path / 'servecast.duckdb'}"
    assert cmds == [f"servecast traces {db}", f"SERVECAST_OUT='my out' servecast dashboard {db}",
                    "servecast serve --models 'my out/models'"]
