"""The one fast/full preset concept: each kind names its training settings as a config
dataclass and its two presets as a `Preset` of two instances of it.

`fast`: the demo's, the tests' and the CLI's `--fast` settings (seconds to minutes on the
shared 2-core machine); `full`: the benchmarks' and the CLI's default settings. Light
(standard library only): the CLI imports the presets at start-up to show their defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

C = TypeVar("C")


@dataclass(frozen=True)
class Preset(Generic[C]):
    """The fast and full settings (instances of one config dataclass) of a kind."""

    fast: C
    full: C

    def __post_init__(self) -> None:
        if type(self.fast) is not type(self.full) or not dataclasses.is_dataclass(self.full):
            raise TypeError("a Preset holds two instances of one config dataclass")

    def pick(self, fast: bool, **overrides: Any) -> C:
        """The fast or the full settings, with `overrides` (None values ignored) replaced."""
        base = self.fast if fast else self.full
        return dataclasses.replace(base, **{k: v for k, v in overrides.items()
                                            if v is not None})


def default(config: type, name: str) -> Any:
    """The default of field `name` of the config dataclass `config` (what a CLI option
    shows), so a default is written once, in the dataclass."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ValueError(f"{config.__name__}.{name} has no default")
    raise ValueError(f"{config.__name__} has no field {name!r}")
