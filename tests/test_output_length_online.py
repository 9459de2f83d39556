"""Online calibration through `Estimator.observe_output` on another LLM's answers, and
`servecast train output-length` warning when a model loses to a baseline.

A metadata model trained on Azure's conversation trace (its LLM answers with a median of 129
tokens) serves Mooncake's conversation trace (Kimi: median 350) one request at a time, as a
scheduler would: `output_length(..., request_id=)` on arrival, `observe_output(...,
request_id=)` on completion. Only the observed completions move the calibration.
"""

from __future__ import annotations

import numpy as np
import pytest

from servecast.estimator import Estimator

pytestmark = pytest.mark.slow  # real traces, a model fit and ~2,000 served requests

WARMUP = 300  # requests observed before coverage is scored ("a few hundred")
N = 2000


@pytest.fixture(scope="module")
def store(store_of):
    return store_of(("azure-llm", "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
                     "conv"), ("mooncake", "llm/mooncake", "mooncake"))


@pytest.fixture(scope="module")
def served(store, tmp_path_factory):
    from servecast.predictors.output_length import create
    from servecast.predictors.output_length.settings import PRESET
    from servecast.predictors.output_length.train import load_requests

    path = create("metadata", **PRESET.fast.params("metadata")).fit(
        load_requests(store, "conv")).save(tmp_path_factory.mktemp("m") / "output_length")
    other = load_requests(store, "mooncake").sort("arrival_s").head(N)
    return path, other


def _serve(path, other, observe: bool) -> tuple[np.ndarray, Estimator]:
    """p90 served per request (with `observe`, each completion reported right after)."""
    from servecast.predictors.output_length.runtime import serve_replay

    est = Estimator.load(path)
    return serve_replay(est, other, observe)[:, 1], est


def test_observed_completions_restore_p90_coverage_on_another_llm(served):
    path, other = served
    y = other["output_tokens"].to_numpy()
    static, _ = _serve(path, other, observe=False)
    online, est = _serve(path, other, observe=True)
    before = float(np.mean(y[WARMUP:] <= static[WARMUP:]))
    after = float(np.mean(y[WARMUP:] <= online[WARMUP:]))
    assert before < 0.8  # Kimi writes longer: the fitted p90 under-covers
    assert 0.87 <= after <= 0.97
    state = est.output_calibration()
    assert state["observed"] == N and state["scale"] > 1.2  # the level learned "longer"
    # the learned state is per Estimator: a fresh one serves the fitted calibration again
    first = other.row(0, named=True)
    assert Estimator.load(path).output_length(first["prompt_tokens"]).p90 == pytest.approx(
        static[0])


def test_completion_without_its_estimate_does_not_calibrate(served):
    path, other = served
    est = Estimator.load(path)
    r = other.row(0, named=True)
    before = est.output_length(r["prompt_tokens"], request_id="a")
    assert not est.observe_output(None, r["prompt_tokens"], 10 * r["output_tokens"],
                                  request_id="b")
    assert est.observe_output(None, r["prompt_tokens"], r["output_tokens"], request_id="a")
    assert not est.observe_output(None, r["prompt_tokens"], r["output_tokens"],
                                  request_id="a")  # scored once
    assert est.output_calibration()["observed"] == 1
    assert est.output_length(r["prompt_tokens"]).p50 >= 0 and before.p50 >= 0


def test_train_warns_and_records_when_a_baseline_wins(store, tmp_path):
    """`servecast train output-length --model global` on a real trace: the prompt-bin
    baseline ranks outputs better than a global median, so the CLI warns on stderr (exit 0,
    the model saved) and the model card records the warning; the metadata model beats every
    baseline and is saved without one. `--fast` and `--trees` reach the saved model."""
    import json
    import subprocess
    import sys

    db = store.path
    store.close()  # the CLI opens the store read-only in its own process
    cmd = [sys.executable, "-m", "servecast.cli", "train", "output-length", "conv", "--db",
           str(db), "--fast"]
    lose = subprocess.run([*cmd, "--model", "global", "--out", str(tmp_path / "g")],
                          capture_output=True, text=True)
    assert lose.returncode == 0, lose.stderr
    assert "warning: the prompt_bins baseline ranks the held-out outputs better" in lose.stderr
    card = json.loads((tmp_path / "g" / "model_card.json").read_text())
    assert card["beats_baselines"] is False
    assert any("prompt_bins" in w for w in card["warnings"])
    win = subprocess.run([*cmd, "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert win.returncode == 0 and "warning" not in win.stderr, win.stderr
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert card["beats_baselines"] is True and card["warnings"] == []
    # --fast: the fast preset's GBM settings reach the saved model
    from servecast.predictors.output_length.settings import PRESET

    fast = PRESET.fast.params("metadata")
    assert {k: card["params"][k] for k in fast} == fast != PRESET.full.params("metadata")
    # an option given on the command line wins over the preset; the rest stay fast
    given = subprocess.run([*cmd, "--trees", "40", "--out", str(tmp_path / "t")],
                           capture_output=True, text=True)
    assert given.returncode == 0, given.stderr
    card = json.loads((tmp_path / "t" / "model_card.json").read_text())
    assert card["params"]["n_estimators"] == 40
    assert card["params"]["learning_rate"] == PRESET.fast.learning_rate


def test_losses_names_each_baseline_and_metric():
    from servecast.predictors.output_length.train import losses

    model = {"mae_p50": 100.0, "kendall_tau": 0.4}
    out = losses(model, {"a": {"mae_p50": 90.0, "kendall_tau": 0.3},
                         "b": {"mae_p50": 120.0, "kendall_tau": 0.5},
                         "c": {"mae_p50": 100.0, "kendall_tau": 0.4}})
    assert out == ["the a baseline has a lower MAE of p50 on the held-out split (90.0 vs the "
                   "model's 100.0 tokens)",
                   "the b baseline ranks the held-out outputs better (Kendall tau 0.500 vs "
                   "the model's 0.400)"]
