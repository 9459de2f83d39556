"""Shared fixtures: the real-data folder and one store with every shared dataset ingested."""

from __future__ import annotations

import os
import pickle
import shutil
from functools import partial
from pathlib import Path

import pytest

from servecast.config import data_dir


@pytest.fixture(scope="session")
def data() -> Path:
    """The shared real-data folder (`$SERVECAST_DATA` or ../shared/datasets)."""
    d = data_dir()
    if not d.is_dir():
        pytest.fail(f"real data folder {d} missing: set SERVECAST_DATA")
    return d


def run_once(tmp_path_factory, name: str, build) -> Path:
    """Folder `name` of this test run, filled once by `build(folder)` for every pytest-xdist
    worker: the first worker to ask builds it under a file lock, the others wait for it,
    then read it (readers only: a test that writes copies it first). `.built` marks a
    complete folder; one without it (a build that failed or was killed) is built again.
    Outside xdist the folder lives in the run's own base temp dir."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base  # the run's, shared
    folder = root / f"once-{name}"
    with FileLock(str(root / f"once-{name}.lock")):
        if not (folder / ".built").exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def _read_only_store(path: Path):
    """A store the session's tests share, opened read-only (every worker opens it)."""
    from servecast.store import Store

    return Store(path, read_only=True)


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory, data):
    """A store with every shared dataset ingested, built once per test run (all workers)
    and opened read-only: tests that write use their own `Store(tmp_path / ...)`."""
    from servecast.datasets.catalog import ingest_shared
    from servecast.store import Store

    def build(folder: Path) -> None:
        with Store(folder / "shared.duckdb") as store:
            ingest_shared(store, root=data)

    store = _read_only_store(run_once(tmp_path_factory, "shared_store", build)
                             / "shared.duckdb")
    yield store
    store.close()


@pytest.fixture(scope="session")
def fitted_kind(tmp_path_factory):
    """kind -> (Fixture, fitted predictor, what `fit` returned, saved dir) for every kind of
    `predictors.registry.KINDS`, fitted on the kind's small registry fixture once per test
    run (all workers: the predictor and `fit`'s return pickled together, so `out is model`
    holds as fitted; each worker unpickles its copy). Read-only: tests that change a
    predictor copy or refit it."""
    from servecast.predictors.registry import get

    cache: dict = {}

    def build(kind: str, folder: Path) -> None:
        fx = get(kind).fixture()
        model = fx.make()
        out = model.fit(fx.train, fx.train_target)
        model.save(folder / kind)
        (folder / "fitted.pickle").write_bytes(pickle.dumps((model, out)))

    def fitted(kind: str):
        if kind not in cache:
            folder = run_once(tmp_path_factory, f"fitted-{kind}", partial(build, kind))
            model, out = pickle.loads((folder / "fitted.pickle").read_bytes())
            cache[kind] = (get(kind).fixture(), model, out, folder / kind)
        return cache[kind]

    return fitted


@pytest.fixture
def tmp_store(tmp_path):
    """An empty store in a temporary folder."""
    from servecast.store import Store

    store = Store(tmp_path / "t.duckdb")
    yield store
    store.close()


os.environ.setdefault("MPLBACKEND", "Agg")
# Under pytest-xdist each worker (and what it starts: CLI runs, notebook kernels) gets its
# share of the cores for OpenMP (torch) threads, so the workers' threads do not spin
# against each other.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


@pytest.fixture(scope="module")
def store_of(tmp_path_factory, data):
    """`store_of((source, path, trace), ...)` -> a new store in a temporary folder with each
    file or folder ingested (`path` relative to the shared data folder, or absolute); every
    store made this way is closed at the end of the test module."""
    from servecast.store import Store

    made = []

    def make(*items: tuple[str, str | Path, str]) -> Store:
        store = Store(tmp_path_factory.mktemp("store") / "t.duckdb")
        made.append(store)
        for source, path, trace in items:
            store.ingest(source, [data / path], trace=trace)
        return store

    yield make
    for store in made:
        store.close()


def _sysbench(data: Path, folder: Path) -> Path:
    """`folder`/azure_vm_noise: the Sysbench suite of the shared Azure VM-noise data alone
    (hive layout; the smallest suite: a quick `azure-vm-noise` ingest)."""
    suite = "test_suite=Sysbench"
    shutil.copytree(data / "vm/azure_vm_noise" / suite, folder / "azure_vm_noise" / suite)
    return folder / "azure_vm_noise"


@pytest.fixture(scope="module")
def vm_sysbench(tmp_path_factory, data) -> Path:
    """A hive-layout folder holding only the Sysbench suite of the shared Azure VM-noise data
    (the smallest suite: a quick `azure-vm-noise` ingest)."""
    return _sysbench(data, tmp_path_factory.mktemp("vm"))


@pytest.fixture(scope="session")
def figures_store(tmp_path_factory, data):
    """The small real traces behind every analytics figure: Azure code, Mooncake, the
    BurstGPT sessions fixture, OLMoE routing, Helios and the VM Sysbench suite; built once
    per test run (all workers) and opened read-only."""
    from servecast.store import Store

    sessions = Path(__file__).parent / "fixtures" / "burstgpt_v3_sessions.csv"

    def build(folder: Path) -> None:
        items = [("azure-llm", data / "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv",
                  "code"), ("mooncake", data / "llm/mooncake", "mooncake"),
                 ("burstgpt", sessions, "sessions"),
                 ("olmoe-routing", data / "moe/olmoe_routing", "olmoe"),
                 ("helios", data / "cluster/helios_earth", "helios"),
                 ("azure-vm-noise", _sysbench(data, folder / "vm"), "vm")]
        with Store(folder / "figures.duckdb") as store:
            for source, path, trace in items:
                store.ingest(source, [path], trace=trace)

    store = _read_only_store(run_once(tmp_path_factory, "figures_store", build)
                             / "figures.duckdb")
    yield store
    store.close()


@pytest.fixture
def trajectory():
    """A small gamma_eff trajectory of two layers and one shaded phase on layer 0:
    (traj, phases), the frames both MoE trajectory figures draw."""
    import polars as pl

    traj = pl.DataFrame({"step": [10, 20, 30] * 2, "layer": [0] * 3 + [1] * 3,
                         "gamma": [0.1, 0.2, 0.3, 1.0, 0.9, 0.8],
                         "gamma_lo": [0.0, 0.1, 0.2, 0.8, 0.7, 0.6],
                         "gamma_hi": [0.2, 0.3, 0.4, 1.2, 1.1, 1.0],
                         "gamma_single": [0.1] * 6})
    phases = pl.DataFrame({"layer": [0], "start": [10], "end": [20], "phase": ["surge"]})
    return traj, phases


@pytest.fixture(scope="module")
def benchmark_module():
    """`benchmark_module("capacity_mlperf")`: a script of benchmarks/ imported as a module,
    its folder on sys.path while the test module runs (the scripts import their siblings)."""
    import importlib

    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    yield importlib.import_module
    mp.undo()


@pytest.fixture(scope="session")
def tools_python() -> Path:
    """The Python of the pinned replay tools' venv (GuideLLM, AIPerf; `make tools`)."""
    root = Path(__file__).resolve().parents[1]
    py = Path(os.environ.get("SERVECAST_TOOLS_VENV", root / ".venv-tools")) / "bin" / "python"
    if not py.exists():
        pytest.fail(f"{py} missing: run `make tools` (GuideLLM and AIPerf in their own venv)")
    return py


# -- scheduling on pytest-xdist workers (`pytest -n auto --maxprocesses 8 --dist loadfile`,
# `make test`) -------------------------------------------------------------------------------

#: the test files that take the most CPU, costliest first: they start first, so the workers
#: do not end with one long file on one of them (README.md, `make test`)
LONGEST_FIRST = ("test_ntua_interference", "test_output_length_text", "test_notebooks",
                 "test_service", "test_readme", "test_step_time", "test_ingest_shared",
                 "test_bench_results", "test_app", "test_cli_store", "test_colocation_gbm")


def _loadfile(config) -> bool:
    """`--dist loadfile` on the controller, or an xdist worker (where dist reads "no"; the
    order is harmless under the other modes)."""
    return getattr(config.option, "dist", "no") == "loadfile" or hasattr(config, "workerinput")


def pytest_configure(config):
    # xdist orders the files by test count unless told not to; the order below is by cost
    if _loadfile(config):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """On xdist workers the files of LONGEST_FIRST come first (each file stays whole: its
    module fixtures are built once); the order of the tests inside a file is kept."""
    if not _loadfile(config):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(Path(str(it.fspath)).stem, len(rank)))
