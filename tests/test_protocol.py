"""The predictor contract, checked for every kind of the registry (`predictors.registry`):
fit returns self, predict is unit-aligned, save/load and the runtime reproduce predict,
evaluate has no side effects, an unfitted predictor raises NotFittedError, parameters
round-trip through the model card. Each kind fits its small registry fixture once."""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest

from servecast.errors import NotFittedError
from servecast.predictors.base import ModelCard, Predictor
from servecast.predictors.registry import KINDS, Runtime, get

#: kinds whose fixture fit takes more than ~5 s here (Lightning start-up and training)
SLOW = {"interference", "kernel_latency"}
ALL = [pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k for k in sorted(KINDS)]


def _units(model: Predictor, frame: pl.DataFrame) -> int:
    return frame.height if model.unit is None else frame[model.unit].n_unique()


@pytest.mark.parametrize("kind", ALL)
def test_fit_returns_self_and_predict_is_unit_aligned(fitted_kind, kind):
    fx, model, out, _ = fitted_kind(kind)
    assert isinstance(model, Predictor) and model.kind == kind
    assert out is model
    pred = model.predict(fx.test)
    assert isinstance(pred, pl.DataFrame)
    assert pred.height == _units(model, fx.test)
    assert set(fx.columns) <= set(pred.columns)
    if model.unit is not None:  # one row per unit, in order of first appearance
        assert pred[model.unit].to_list() == fx.test[model.unit].unique(
            maintain_order=True).to_list()
    numeric = [c for c in fx.columns if c != model.unit]
    assert np.isfinite(pred.select(numeric).to_numpy()).all()


@pytest.mark.parametrize("kind", ALL)
def test_save_load_round_trip_gives_identical_predictions(fitted_kind, kind):
    fx, model, _, path = fitted_kind(kind)
    again = type(model).load(path)
    assert again.predict(fx.test).equals(model.predict(fx.test))
    assert again.get_params() == json.loads(json.dumps(model.get_params()))
    card = ModelCard.from_json(json.loads((path / "model_card.json").read_text()))
    assert card.kind == kind and card.params == again.get_params()
    assert card.versions["numpy"] == np.__version__


@pytest.mark.parametrize("kind", ALL)
def test_evaluate_is_repeatable_and_leaves_predictions_unchanged(fitted_kind, kind):
    fx, model, _, _ = fitted_kind(kind)
    before = model.predict(fx.test)
    first = model.evaluate(fx.test, fx.test_target)
    second = model.evaluate(fx.test, fx.test_target)
    assert first == second
    assert model.predict(fx.test).equals(before)
    if kind == "output_length":  # the online replay works on a copy
        from servecast.predictors.output_length.core import online_evaluate

        assert online_evaluate(model, fx.test)["fed_rows"] > 0
        assert model.predict(fx.test).equals(before)


@pytest.mark.parametrize("kind", ALL)
def test_unfitted_predictor_raises_not_fitted(fitted_kind, kind, tmp_path):
    fx = fitted_kind(kind)[0]
    model = fx.make()
    assert not model.is_fitted
    for call in (lambda: model.predict(fx.test),
                 lambda: model.evaluate(fx.test, fx.test_target),
                 lambda: model.save(tmp_path / "m")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", ALL)
def test_params_are_stored_verbatim(fitted_kind, kind):
    fx, model, _, _ = fitted_kind(kind)
    params = model.get_params()
    rebuilt = type(model)(**copy.deepcopy(params))
    assert rebuilt.get_params() == params
    assert not rebuilt.is_fitted


@pytest.mark.parametrize("kind", ALL)
def test_runtime_equals_predict_on_the_same_rows(fitted_kind, kind):
    fx, model, _, path = fitted_kind(kind)
    runtime = get(kind).runtime().load(path)
    assert isinstance(runtime, Runtime) and runtime.kind == kind
    got = runtime.predict(fx.test)
    want = model.predict(fx.test)
    for col in fx.columns:
        if want[col].dtype == pl.String:
            assert list(got[col]) == want[col].to_list()
        else:
            np.testing.assert_allclose(np.asarray(got[col], dtype=float),
                                       want[col].to_numpy(), rtol=1e-4, atol=1e-9)
