"""The predictor contract shared by every predictor kind, and its model card.

    fit(frame, target=None) -> self      predict(frame) -> frame      evaluate(frame, target=None)
    save(dir) -> dir                     load(dir) -> predictor       get_params() -> dict

Frames in, frames out. `predict` returns one row per *unit* of the input, in input order:
a unit is a row for row-wise kinds (`unit = None`: output length, kernel latency, MoE
congestion) and the distinct values of the `unit` column for kinds whose unit spans several
rows (interference: `unit = "window_id"`; its output then carries that column first).

Targets: row-wise kinds read their target from a column of `frame` (`target=None`; e.g.
`output_tokens`, `latency_ms`, `load`); multi-row kinds take `target` as a frame with one
row per unit ([unit column, target column]). Fixed context (device spec sheets) is a
constructor parameter or a frame column, never a `fit`/`predict` argument.

Constructor parameters are stored verbatim (`get_params`, captured when the object is built)
and written to the `ModelCard` by `save`; `load` rebuilds the predictor from them. Every
`predict`/`evaluate`/`save` checks the fitted state through `check_fitted` (the one place that
raises `NotFittedError`). `evaluate` has no side effects: it never changes what `predict`
returns afterwards.

`save` writes the weights plus `model_card.json`; `load` refuses a directory written by an
incompatible servecast version (ModelVersionError).
"""

from __future__ import annotations

import functools
import inspect
import json
import platform
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from servecast.errors import ModelVersionError, NotFittedError

#: bump when a saved model's format changes incompatibly (2: constructor parameters in the
#: card's `params`, loaded verbatim)
MODEL_FORMAT = 2


def versions() -> dict[str, str]:
    """Versions of the libraries a saved model depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("servecast", "numpy", "scikit-learn", "lightgbm", "torch", "pytorch-lightning"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class ModelCard:
    """What `model_card.json` holds. `params`: the constructor parameters (verbatim);
    `data`: what the model was fitted on; `split`: how train / validation / test were cut;
    `metrics`: held-out metrics; `extra`: kind-specific notes (written flat beside the
    typed fields, so older readers of the JSON keep working)."""

    kind: str
    format: int = MODEL_FORMAT
    params: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    saved_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    TYPED: ClassVar[tuple[str, ...]] = ("kind", "format", "params", "data", "split", "metrics",
                                        "versions", "saved_at")

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the typed fields, then `extra`'s keys at the top level."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        return out | {k: v for k, v in self.extra.items() if k not in self.TYPED}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelCard:
        """Read a card object (unknown keys go to `extra`)."""
        typed = {k: obj[k] for k in cls.TYPED if k in obj and obj[k] is not None}
        return cls(**typed, extra={k: v for k, v in obj.items() if k not in cls.TYPED})


def _record_params(init):
    """Wrap a subclass `__init__` so the arguments of the outermost call are kept verbatim
    (defaults filled in, `**kw` flattened) in `self._params`."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "_params" not in self.__dict__:
            sig = inspect.signature(type(self).__init__)
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = sig.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    params.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    params[name] = value
            self._params = params
        init(self, *args, **kwargs)

    wrapper._records_params = True
    return wrapper


class SavedModel(ABC):
    """A model saved with a card: constructor parameters recorded verbatim (`get_params`),
    fitted state checked in one place (`check_fitted`), `save` / `load` with
    `model_card.json`. Subclasses set `kind`, implement is_fitted / _save / _load."""

    kind: ClassVar[str]  # e.g. "output_length"; also the sub-folder name in a models dir

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_records_params", False):
            cls.__init__ = _record_params(init)

    def __init__(self) -> None:
        self.card: dict[str, Any] = {}  # free-form notes: data, split, metrics, ...

    @property
    @abstractmethod
    def is_fitted(self) -> bool:
        """True once `fit` (or `load`) has set the learned state."""

    @abstractmethod
    def _save(self, path: Path) -> None:
        """Write the learned state (weights) into the existing directory `path`."""

    @classmethod
    @abstractmethod
    def _load(cls, path: Path, card: dict) -> SavedModel:
        """Rebuild a fitted predictor from `path` (built with `card["params"]`)."""

    # -- shared ----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters as given (defaults filled in), a copy."""
        return dict(getattr(self, "_params", {}))

    def check_fitted(self) -> None:
        """Raise NotFittedError unless the predictor is fitted (the one place that does)."""
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted; call fit(frame) "
                                 "or load a saved model first")

    def model_card(self) -> ModelCard:
        """The typed card `save` writes: params from `get_params`, the rest from `card`."""
        notes = dict(self.card)
        typed = {k: notes.pop(k) for k in ("data", "split", "metrics") if k in notes}
        notes.pop("params", None)
        return ModelCard(kind=self.kind, params=self.get_params(), versions=versions(),
                         saved_at=datetime.now(UTC).isoformat(timespec="seconds"),
                         **{k: v for k, v in typed.items() if isinstance(v, dict)},
                         extra=notes | {k: v for k, v in typed.items()
                                        if not isinstance(v, dict)})

    def save(self, path: str | Path) -> Path:
        """Write weights and `model_card.json` into `path` (created); returns the path."""
        self.check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path)
        card = self.model_card().to_json()
        (path / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SavedModel:
        """Load a model saved by `save` (raises ModelVersionError on a foreign directory)."""
        path = Path(path)
        card = read_card(path, cls.kind)
        model = cls._load(path, card)
        model.card = {k: v for k, v in card.items() if k not in ("kind", "format")}
        return model

    @classmethod
    def from_params(cls, path: Path, params: dict) -> SavedModel:
        """`cls(**params)`, or ModelVersionError naming `path` when the saved parameters do
        not fit this version's constructor."""
        try:
            return cls(**params)
        except TypeError as e:
            raise ModelVersionError(f"{path}: saved by another servecast version ({e}); "
                                    "retrain it with this version") from None


class Predictor(SavedModel):
    """Base of every predictor kind (the contract of the module docstring): subclasses set
    `kind` (and `unit` for multi-row units), implement fit / predict / evaluate /
    is_fitted / _save / _load."""

    #: None: one prediction per input row; else the column whose distinct values are the units
    unit: ClassVar[str | None] = None

    @abstractmethod
    def fit(self, frame, target=None) -> Predictor:
        """Fit on `frame` (targets as in the module docstring); returns self."""

    @abstractmethod
    def predict(self, frame):
        """One output row per unit of `frame`, in input order (a polars DataFrame)."""

    @abstractmethod
    def evaluate(self, frame, target=None) -> dict:
        """Held-out metrics of `frame`; no side effects on the predictor."""


_RESAVE = "re-save the model or retrain it with this servecast"


def read_json(file: Path, keys: dict[str, type | tuple[type, ...]] | None = None,
              top: type = dict) -> Any:
    """The JSON of a saved model's `file`, checked: a JSON `top` (object by default) holding
    every dotted key of `keys` with a value of its type (bool is not a number here).

    Raises ModelVersionError naming the file (and line/column or key) on a missing or
    unreadable file, bad JSON, another top-level type, a missing key or a wrong value type;
    never executes anything from the file.
    """
    fix = _RESAVE
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelVersionError(f"{file}: missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelVersionError(f"{file}: unreadable ({e}); {fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelVersionError(f"{file}: line {e.lineno} column {e.colno}: not valid JSON "
                                f"({e.msg}); {fix}") from None
    if not isinstance(data, top):
        raise ModelVersionError(f"{file}: top level is a JSON {_json_type(data)}, expected "
                                f"a JSON {_json_type(top())}; {fix}")
    return check_keys(data, file, keys or {})


def check_keys(data: dict, file: Path, keys: dict[str, type | tuple[type, ...]]) -> dict:
    """`data` (read from `file`) when it holds every dotted key of `keys` with a value of
    its type; ModelVersionError naming the file and key otherwise."""
    fix = _RESAVE
    for key, want in keys.items():
        value: Any = data
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ModelVersionError(f"{file}: key {key!r} missing; {fix}")
            value = value[part]
        wants = want if isinstance(want, tuple) else (want,)
        if not isinstance(value, wants) or (isinstance(value, bool) and bool not in wants):
            raise ModelVersionError(
                f"{file}: key {key!r} is a JSON {_json_type(value)}, expected "
                f"{' or '.join(dict.fromkeys(_json_type(w()) for w in wants))}; {fix}")
    return data


def _json_type(value: Any) -> str:
    names = {bool: "boolean", dict: "object", list: "array", str: "string", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_card(path: Path, kind: str) -> dict:
    """The model card of `path`, checked for kind and format version (ModelVersionError
    naming the file when it is missing, not JSON, not an object or lacks these keys)."""
    card_file = path / "model_card.json"
    if not card_file.is_file():
        raise ModelVersionError(
            f"{path}: no model_card.json; not a servecast model dir (train one with "
            f"`servecast train {kind.replace('_', '-')} ...`)"
        )
    card = read_json(card_file, {"kind": str})
    if card["kind"] != kind:
        raise ModelVersionError(f"{card_file}: holds a {card['kind']!r} model, not {kind!r}")
    return check_format(card, card_file)


def check_format(card: dict, card_file: Path) -> dict:
    """`card` when its `format` is the version this servecast reads; ModelVersionError
    naming `card_file` when the key is missing, not a JSON integer (a damaged card) or
    another version (an older or newer servecast saved it)."""
    fmt = card.get("format")
    if "format" not in card:
        raise ModelVersionError(f"{card_file}: key 'format' (the model format version) "
                                "missing; the card is damaged or was not written by "
                                "servecast: retrain the model")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise ModelVersionError(f"{card_file}: key 'format' is a JSON {_json_type(fmt)} "
                                f"({json.dumps(fmt)}), expected an integer model format "
                                "version; the card is damaged: retrain the model")
    if fmt != MODEL_FORMAT:
        versions = card.get("versions")
        saved_by = versions.get("servecast", "?") if isinstance(versions, dict) else "?"
        raise ModelVersionError(
            f"{card_file}: model format {fmt} (servecast {saved_by}), this servecast reads "
            f"format {MODEL_FORMAT}; retrain it with this version"
        )
    return card


def read_torch_state(file: Path) -> dict:
    """The tensors of a saved state dict `file` (CPU), read with `weights_only=True`: a file
    whose unpickling would build anything but tensors and plain containers is refused
    (ModelVersionError naming the file), nothing in it runs."""
    import pickle

    import torch

    if not file.is_file():
        raise ModelVersionError(f"{file}: missing; re-save the model or retrain it")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelVersionError(f"{file}: not a plain tensor state dict, refused unread "
                                f"({first}); retrain the model") from None
    if not isinstance(state, dict):
        raise ModelVersionError(f"{file}: holds a {type(state).__name__}, not a state dict; "
                                "retrain the model")
    return state
