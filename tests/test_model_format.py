"""A saved model's format version is checked in one place (`base.check_format`): an unknown
version or a damaged `format` key is a ModelVersionError naming the card, from
`Estimator.load` (before any runtime loads), from `servecast serve` (exit 2) and from a
predictor's own `load`; the observe route's schema types its flags as booleans."""

from __future__ import annotations

import json
import shutil

import pytest

from servecast.errors import ModelVersionError
from servecast.estimator import Estimator
from servecast.predictors.base import MODEL_FORMAT
from servecast.predictors.registry import get

KIND = "moe_congestion"  # the quickest kind to fit; the check does not depend on the kind


@pytest.fixture(scope="module")
def saved(fitted_kind):
    return fitted_kind(KIND)[3]


#: format value written into the card (None: key removed) -> what the error must say
CASES = [
    (MODEL_FORMAT + 1, f"model format {MODEL_FORMAT + 1} (servecast"),
    (1, f"this servecast reads format {MODEL_FORMAT}"),
    (str(MODEL_FORMAT), f"key 'format' is a JSON string (\"{MODEL_FORMAT}\"), expected an "
                        "integer"),
    (float(MODEL_FORMAT), "key 'format' is a JSON number (2.0), expected an integer"),
    (True, "key 'format' is a JSON boolean (true)"),
    (None, "key 'format' (the model format version) missing"),
]


def _with_format(src, dst, value):
    shutil.copytree(src, dst / KIND)
    card_file = dst / KIND / "model_card.json"
    card = json.loads(card_file.read_text())
    if value is None:
        card.pop("format")
    else:
        card["format"] = value
    card_file.write_text(json.dumps(card))
    return card_file


@pytest.mark.parametrize("value,says", CASES, ids=[repr(v) for v, _ in CASES])
def test_unknown_or_damaged_format_is_a_model_version_error(saved, tmp_path, value, says):
    card_file = _with_format(saved, tmp_path, value)
    with pytest.raises(ModelVersionError) as err:
        Estimator.load(tmp_path)  # refused before any runtime loads
    assert str(card_file) in str(err.value) and says in str(err.value)
    with pytest.raises(ModelVersionError, match=says.replace("(", r"\(").replace(")", r"\)")):
        get(KIND).predictor().load(tmp_path / KIND)


def test_the_saved_format_loads(saved, tmp_path):
    shutil.copytree(saved, tmp_path / KIND)
    assert json.loads((tmp_path / KIND / "model_card.json").read_text())["format"] == \
        MODEL_FORMAT
    assert Estimator.load(tmp_path).runtime(KIND) is not None


def test_serve_refuses_an_unknown_format_with_exit_2(saved, tmp_path, capsys):
    from servecast.cli import main

    card_file = _with_format(saved, tmp_path, MODEL_FORMAT + 7)
    assert main(["serve", "--models", str(tmp_path), "--port", "9"]) == 2
    err = capsys.readouterr().err
    assert str(card_file) in err and "Traceback" not in err
    assert f"model format {MODEL_FORMAT + 7}" in err


def test_observe_route_flags_are_booleans():
    """Flags on the observe route are JSON booleans, never numbers bounded to [0, 1]."""
    from servecast.service.models import CompletedRequest, Recorded

    for model in (CompletedRequest, Recorded):
        props = model.model_json_schema()["properties"]
        for name, prop in props.items():
            branches = prop.get("anyOf", [prop])
            for b in branches:
                bounded01 = (b.get("type") in ("number", "integer") and
                             b.get("minimum", b.get("exclusiveMinimum")) == 0 and
                             b.get("maximum", b.get("exclusiveMaximum")) == 1)
                assert not bounded01, f"{model.__name__}.{name} is a 0..1 number, not a bool"
    assert Recorded.model_json_schema()["properties"]["recorded"]["type"] == "boolean"
