"""The one registry of predictor kinds: kind -> predictor class, runtime class, test fixture.

    from servecast.predictors.registry import KINDS, get
    get("kernel_latency").predictor()     # the Predictor subclass (imports its heavy stack)
    get("kernel_latency").runtime()       # the light runtime class the Estimator loads
    get("kernel_latency").fixture()       # a small Fixture for the conformance tests

Entries name their classes as "module:attribute" under `servecast.predictors`, imported on
first use, so reading the registry (the Estimator does) imports nothing heavy. A new kind is
one entry here plus its subpackage (docs/architecture.md says how).

`Runtime` is the protocol every runtime class follows: `kind`, `load(path)` and a batch
`predict(frame)` whose columns equal the predictor's `predict` on the same rows, plus the
kind-specific single-call methods the Estimator exposes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from servecast.errors import UnknownNameError
from servecast.registry import resolve


@runtime_checkable
class Runtime(Protocol):
    """What the Estimator needs of a kind's runtime (numpy-light: no DuckDB, polars or
    Lightning on the single-call path)."""

    kind: str

    @classmethod
    def load(cls, path: str | Path) -> Runtime:
        """Load a model dir written by the kind's `Predictor.save`."""
        ...

    def predict(self, frame) -> Mapping[str, Any]:
        """Columns (name -> array) equal to the predictor's `predict(frame)` columns."""
        ...


@dataclass(frozen=True)
class Fixture:
    """A small fitting problem for a kind: `make()` builds an unfitted predictor, fitted on
    `train` (+ `train_target`), checked on `test` (+ `test_target`); `columns` are the
    prediction columns the runtime must reproduce."""

    make: Callable[[], Any]
    train: Any
    test: Any
    columns: tuple[str, ...]
    train_target: Any = None
    test_target: Any = None


@dataclass(frozen=True)
class Kind:
    """One predictor kind: where its predictor, runtime and fixture builder live."""

    name: str
    predictor_ref: str  # "module:Class" under servecast.predictors
    runtime_ref: str
    fixture_ref: str

    def predictor(self) -> type:
        return _resolve(self.predictor_ref)

    def runtime(self) -> type:
        return _resolve(self.runtime_ref)

    def fixture(self, seed: int = 0) -> Fixture:
        return _resolve(self.fixture_ref)(seed)


def _resolve(ref: str):
    return resolve("servecast.predictors", ref)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("output_length", "output_length.core:OutputLengthModel",
         "output_length.runtime:Runtime", "output_length.fixture:fixture"),
    Kind("kernel_latency", "kernel_latency.predictor:KernelLatencyPredictor",
         "kernel_latency.runtime:Runtime", "kernel_latency.fixture:fixture"),
    Kind("interference", "interference.predictor:InterferencePredictor",
         "interference.runtime:Runtime", "interference.fixture:fixture"),
    Kind("moe_congestion", "moe_congestion.game:CongestionGame",
         "moe_congestion.runtime:Runtime", "moe_congestion.fixture:fixture"),
    Kind("operator_latency", "operator_latency.predictor:OperatorLatencyModel",
         "operator_latency.runtime:Runtime", "operator_latency.fixture:fixture"),
    Kind("step_time", "step_time.model:StepTimeModel", "step_time.runtime:Runtime",
         "operator_latency.fixture:step_fixture"),
)}


def get(name: str) -> Kind:
    """The registered kind `name` (UnknownNameError lists the known ones)."""
    if name not in KINDS:
        raise UnknownNameError(f"unknown predictor kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]
