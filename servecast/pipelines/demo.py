"""The main job on the shared real data with fast settings: ingest every dataset, characterize
and report, train every predictor into one models dir, and print where everything went.

Layout of `out/`: `report/` (HTML + summary.json), `models/<kind>/` (what `Estimator.load`
and `servecast serve --models` read), and per-area working folders (`interference/`, `moe/`).

The work is split into AREAS (`servecast demo --only llm,moe`, `--skip interference`); the
ingest step loads only the datasets the chosen areas read. Every neural training step prints
one line per epoch (`epoch_lines`), so a slow machine shows progress, not silence.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.training import extra_callbacks
from servecast.store import Store

#: the LLM trace the demo reports on and trains the output-length model on
DEMO_TRACE = "azure_conv"

#: torch threads of the demo's fits. Its models are small: on the shared 2-core machine at
#: load 6-8, `--only kernels,moe` took 8:40 wall / 250 CPU s with torch's default (2
#: threads, which spin against the other processes) and 2:01 / 64 CPU s with one, with the
#: same accuracy table.
DEMO_THREADS = 1

#: demo areas in run order -> what each does (ingest always runs, for the chosen areas)
AREAS = {
    "llm": "characterize + report the Azure conversation trace, train the output-length model",
    "cluster": "ingest the cluster traces (Alibaba, Philly, Helios) for the dashboard",
    "kernels": "train the GPU kernel-latency and NAS-Bench-201 latency models",
    "interference": "train the VM interference model on the Azure VM-noise data",
    "moe": "OLMoE routing imbalance and a small MoE run with its gamma_eff model",
}

#: the area whose steps read each shared dataset (by adapter name)
_AREA_OF_SOURCE = {
    "alibaba-v2017": "cluster", "alibaba-gpu-v2023": "cluster", "alibaba-gpu-v2025": "cluster",
    "philly-runtime": "cluster", "philly-nodes": "cluster", "helios": "cluster",
    "azure-vm-noise": "interference", "neusight": "kernels", "help-nasbench201": "kernels",
    "vidur-mlp": "kernels", "olmoe-routing": "moe",
}  # every other adapter (the LLM request traces) -> "llm"


def select_areas(only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[str]:
    """The areas to run, in AREAS order: `only` (all when empty) minus `skip`. Raises
    InvalidInputError naming an unknown area and the known ones."""
    only, skip = list(only), list(skip)
    for flag, names in (("--only", only), ("--skip", skip)):
        bad = [a for a in names if a not in AREAS]
        if bad:
            raise InvalidInputError(f"{flag}: unknown demo area {', '.join(map(repr, bad))}; "
                                    f"one of {', '.join(AREAS)}")
    chosen = [a for a in AREAS if (not only or a in only) and a not in skip]
    if not chosen:
        raise InvalidInputError("--only/--skip leave no demo area to run; one of "
                                f"{', '.join(AREAS)}")
    return chosen


def ingest_shared(store: Store, data: Path | None, log: Callable[[str], None],
                  areas: Iterable[str] = tuple(AREAS)) -> None:
    """Ingest the shared datasets the `areas` read (already-ingested files are skipped)."""
    from servecast.datasets.catalog import SHARED, ingest_shared

    areas = set(areas)

    def line(source: str, trace: str, r, seconds: float) -> None:
        what = "already in the store" if not r.rows and r.skipped else (
            f"{r.rows:,} rows, {r.rejected:,} rejected")
        log(f"  {trace:<24} {source:<18} {what}  ({seconds:.1f} s)")

    ingest_shared(store, [t for s, _, t in SHARED if _AREA_OF_SOURCE.get(s, "llm") in areas],
                  data, line)


@contextmanager
def epoch_lines(log: Callable[[str], None]) -> Iterator[None]:
    """Within the block, every Lightning fit logs one line per epoch (epoch k/n, train
    loss when logged, seconds since the fit started; for step-bounded fits, every tenth of
    the steps): the predictors' trainers draw a progress bar on a terminal only, and the
    demo's output is often a pipe or a log file. Every `make_trainer` Trainer created in
    the block gets the callback (`predictors.training.extra_callbacks`)."""
    import pytorch_lightning as lightning

    class EpochLine(lightning.Callback):
        def on_train_start(self, trainer, module) -> None:
            self.t0 = time.perf_counter()

        def line(self, trainer, where: str) -> None:
            loss = trainer.callback_metrics.get("train_loss",
                                                trainer.callback_metrics.get("loss"))
            loss = f"  loss {float(loss):.4g}" if loss is not None else ""
            log(f"      {where}{loss}  ({time.perf_counter() - self.t0:.0f} s)")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            n = trainer.max_steps  # step-bounded runs (MoE): a line every tenth of the steps
            if n and n > 0 and trainer.global_step % max(n // 10, 1) == 0:
                self.line(trainer, f"step {trainer.global_step}/{n}")

        def on_train_epoch_end(self, trainer, module) -> None:
            if not (trainer.max_steps and trainer.max_steps > 0):
                self.line(trainer, f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    with extra_callbacks(EpochLine()):
        yield


def train_output_length(store: Store, models: Path, log) -> pl.DataFrame:
    """Metadata output-length model on DEMO_TRACE -> models/output_length; its summary."""
    from servecast.predictors.output_length.train import summary, train_output_length

    result = train_output_length(store, DEMO_TRACE, models / "output_length", fast=True)
    log(f"    output length: trained in {result['seconds']:.1f} s ({result['split']})")
    return summary(result)


def train_kernel_latency(store: Store, models: Path, log) -> pl.DataFrame:
    """Cross-device kernel model and the NAS-Bench-201 model -> models/."""
    from servecast.pipelines.kernel_latency import demo_kernel_latency

    return demo_kernel_latency(store, models, log=log)


def train_interference(store: Store, models: Path, out: Path, log) -> pl.DataFrame:
    """Both Azure VM-noise tasks at reduced size; the fingerprint dual-branch model is the one
    served (models/interference)."""
    from servecast.pipelines.interference import run_interference_demo

    table = run_interference_demo(store, out, log=log)  # saves under out/interference/
    _publish(out / "interference" / "fingerprint" / "dual",
             models / "interference")
    return table


def train_moe(store: Store, models: Path, out: Path, log) -> pl.DataFrame:
    """OLMoE imbalance + a tiny small-MoE run with its gamma_eff model -> models/."""
    from servecast.pipelines.moe import moe_demo

    res = moe_demo(store, out=out / "moe", log=log)
    _publish(out / "moe" / "models" / "moe_congestion", models / "moe_congestion")
    return res.get("transfer", res["trajectory"])


def _publish(src: Path, dst: Path) -> None:
    """Copy one saved predictor into the models dir (replacing an older one)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def cli_prefix() -> str:
    """How to call the `servecast` of this Python from the current folder: plain
    `servecast` when that is the one on PATH (an activated venv), else its path
    (`.venv/bin/servecast` from the project root)."""
    exe = Path(sys.executable).parent / "servecast"
    on_path = shutil.which("servecast")
    if on_path and Path(on_path).resolve() == exe.resolve():
        return "servecast"
    local = Path(".venv/bin/servecast")
    if local.exists() and local.resolve() == exe.resolve():
        return str(local)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def next_commands(store: Store, out: Path, areas: Iterable[str]) -> list[str]:
    """The commands to try after the demo, runnable as printed from the current folder (also
    in a new shell: `--db` unless the store is ./servecast.duckdb and $SERVECAST_DB unset)."""
    cli = shlex.quote(cli_prefix())
    default = not os.environ.get("SERVECAST_DB") and \
        store.path.resolve() == Path("servecast.duckdb").resolve()
    db = "" if default else f" --db {shlex.quote(str(store.path))}"
    env = "" if out.resolve() == Path("out").resolve() else \
        f"SERVECAST_OUT={shlex.quote(str(out))} "
    cmds = [f"{cli} traces{db}"]
    if "llm" in areas:
        cmds.append(f"{cli} info {DEMO_TRACE}{db}")
    cmds.append(f"{env}{cli} dashboard{db}")
    if any(a in areas for a in ("llm", "kernels", "interference", "moe")):
        cmds.append(f"{cli} serve --models {shlex.quote(str(out / 'models'))}")
    return cmds


def run_demo(db: Path | None = None, data: Path | None = None, out: Path = Path("out"),
             log: Callable[[str], None] = print,
             show: Callable[[pl.DataFrame, str], None] | None = None,
             areas: Iterable[str] = tuple(AREAS), threads: int | None = DEMO_THREADS) -> Store:
    """Run the demo steps of `areas` (see AREAS; ingest always runs for them) and print the
    next commands; `show(frame, title)` prints a result table. `threads`: torch's thread
    count for the fits (None: leave it). Returns the store."""
    from servecast.analytics.report import write_report

    areas = select_areas(areas)
    if threads and any(a in areas for a in ("kernels", "interference", "moe")):
        import torch

        torch.set_num_threads(threads)
    show = show or (lambda df, title: log(f"{title}\n{df}"))
    store = Store(db)
    out.mkdir(parents=True, exist_ok=True)
    models = out / "models"
    started = time.perf_counter()
    report = None

    def llm_report() -> None:
        nonlocal report
        report = write_report(store, DEMO_TRACE, out / "report")
        log(f"    report: {report}")

    steps: list[tuple[str, Callable[[], pl.DataFrame | None]]] = []
    if "llm" in areas:
        steps += [(f"characterize {DEMO_TRACE} and write its report", llm_report),
                  ("output-length predictor (fast settings)",
                   lambda: train_output_length(store, models, log))]
    if "kernels" in areas:
        steps.append(("GPU kernel-latency predictors (fast settings)",
                      lambda: train_kernel_latency(store, models, log)))
    if "interference" in areas:
        steps.append(("VM interference predictor (fast settings)",
                      lambda: train_interference(store, models, out, log)))
    if "moe" in areas:
        steps.append(("MoE gamma_eff (fast settings)",
                      lambda: train_moe(store, models, out, log)))
    total = len(steps) + 1
    log(f"[1/{total}] ingest the shared datasets of {', '.join(areas)} into {store.path}")
    ingest_shared(store, data, log, areas)
    show(store.traces().select("trace", "source", "files", "rows", "rejected"),
         "traces in the store")
    with epoch_lines(log):
        for i, (what, step) in enumerate(steps, start=2):
            t0 = time.perf_counter()
            log(f"[{i}/{total}] {what}")
            table = step()
            if table is not None:
                show(table, f"{what} ({time.perf_counter() - t0:.0f} s)")
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    if report is not None:
        log(f"report:    {report.resolve()}")
    if areas != ["cluster"]:
        log(f"models:    {models.resolve()}")
    cli = cli_prefix()
    log("next:" if cli == "servecast" else
        f"next (or `source {Path(cli).parent}/activate` first, then plain `servecast ...`):")
    for cmd in next_commands(store, out, areas):
        log(f"  {cmd}")
    return store
