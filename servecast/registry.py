"""The one registry mechanism: named entries that point at code by import path, imported
only when used.

Every registry of servecast is a plain table of such references: source adapters
(`datasets/__init__.py`, modules scanned for `Adapter` classes), predictor kinds
(`predictors/registry.py`, "module:attribute" for a kind's predictor, runtime and fixture),
output-length model families (`predictors/output_length/__init__.py`), CLI command modules
(`servecast/cli.py`, each with `register(app)`) and dashboard analytics (`app/common.py`).
Reading a table imports nothing; `resolve` imports one entry's module on first use, so a
light caller (the Estimator's runtime path) never pays for a heavy one (Lightning, polars).

A reference is "module" or "module:attribute", relative to a package:
`resolve("servecast.predictors", "kernel_latency.runtime:KernelLatencyRuntime")`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any


def resolve(package: str, ref: str) -> Any:
    """The module `package.<module>` of `ref` ("module" or "module:attribute"), or that
    attribute of it; ImportError / AttributeError name what is missing."""
    module, _, attr = ref.partition(":")
    mod = importlib.import_module(f"{package}.{module}")
    return getattr(mod, attr) if attr else mod


def modules(package: str, names: Iterable[str]) -> Iterator[ModuleType]:
    """The modules `package.<name>` for each of `names`, imported in order."""
    for name in names:
        yield resolve(package, name)
