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


def read_card(path: Path, kind: str) -> dict:
    """The model card of `path`, checked for kind and format version."""
    card_file = path / "model_card.json"
    if not card_file.is_file():
        raise ModelVersionError(
            f"{path}: no model_card.json; not a servecast model dir (train one with "
            f"`servecast train {kind.replace('_', '-')} ...`)"
        )
    card = json.loads(card_file.read_text())
    if card.get("kind") != kind:
        raise ModelVersionError(f"{path}: holds a {card.get('kind')!r} model, not {kind!r}")
    if card.get("format") != MODEL_FORMAT:
        raise ModelVersionError(
            f"{path}: model format {card.get('format')} (servecast "
            f"{card.get('versions', {}).get('servecast', '?')}), this servecast reads format "
            f"{MODEL_FORMAT}; retrain it with this version"
        )
    return card
