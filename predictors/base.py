"""The predictor protocol shared by every predictor, and its model card.

    fit(frame) -> self, predict(frame) -> frame, save(dir), load(dir), evaluate(frame) -> dict

`save` writes the weights plus `model_card.json` (data, split, metrics, versions); `load`
refuses a directory written by an incompatible servecast version (ModelVersionError).
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from servecast.errors import ModelVersionError

#: bump when a saved model's format changes incompatibly
MODEL_FORMAT = 1


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


class Predictor:
    """Base class: subclasses set `kind` and implement fit/predict/evaluate/_save/_load."""

    kind: ClassVar[str]  # e.g. "output_length"; also the sub-folder name in a models dir

    def __init__(self) -> None:
        self.card: dict[str, Any] = {}

    # subclasses implement these -----------------------------------------------------------
    def _save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _load(cls, path: Path, card: dict) -> Predictor:
        raise NotImplementedError

    # shared ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write weights and `model_card.json` into `path` (created); returns the path."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path)
        card = {
            "kind": self.kind,
            "format": MODEL_FORMAT,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            **self.card,
        }
        (path / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """Load a model saved by `save` (raises ModelVersionError on a foreign directory)."""
        path = Path(path)
        card = read_card(path, cls.kind)
        model = cls._load(path, card)
        model.card = {k: v for k, v in card.items() if k not in ("kind", "format")}
        return model


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
    if card.get("format") != MODEL_FORMAT:
        versions = card.get("versions")
        saved_by = versions.get("servecast", "?") if isinstance(versions, dict) else "?"
        raise ModelVersionError(
            f"{card_file}: model format {card.get('format')} (servecast {saved_by}), this "
            f"servecast reads format {MODEL_FORMAT}; retrain it with this version"
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
