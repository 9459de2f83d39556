"""The scheduler facade: Estimator.output_length on a saved model, its errors, and that the
hot path imports neither DuckDB nor Lightning."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from servecast.errors import InvalidInputError, UnknownNameError
from servecast.estimator import Estimator, LengthEstimate
from servecast.predictors.output_length import create
from servecast.predictors.output_length.fixture import requests

ROWS = 3000


def _frame(n: int = ROWS, seed: int = 0) -> pl.DataFrame:
    """Synthetic BurstGPT-schema requests: output depends on model, log type and prompt."""
    return requests(n, seed)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = create("metadata", n_estimators=30, learning_rate=0.1).fit(_frame())
    model.save(root / "output_length")
    return root, model


def test_estimator_matches_predictor(models_dir):
    root, model = models_dir
    est = Estimator.load(root)
    assert est.kinds == ["output_length"]
    e = est.output_length(1200, model="GPT-4", log_type="API log")
    assert isinstance(e, LengthEstimate) and e.p50 <= e.p90 <= e.p99
    ref = model.predict({"prompt_tokens": [1200], "model": ["GPT-4"],
                         "log_type": ["API log"]}).row(0)
    assert np.allclose(e, ref, rtol=1e-4)
    batch = est.output_length_batch(_frame(500, seed=1))
    assert batch.columns == ["p50", "p90", "p99", "mean"] and batch.height == 500
    # GPT-4 conversations are the longest segment of the synthetic frame
    gpt4 = est.output_length(1200, model="GPT-4", log_type="Conversation log")
    assert gpt4.p50 > est.output_length(1200, model="ChatGPT", log_type="API log").p50


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, None, "12", True])
def test_bad_prompt_tokens(models_dir, bad):
    est = Estimator.load(models_dir[0])
    with pytest.raises(InvalidInputError, match="prompt_tokens"):
        est.output_length(bad)


def test_unknown_names(models_dir):
    est = Estimator.load(models_dir[0])
    with pytest.raises(UnknownNameError, match="unknown model 'Llama'.*'ChatGPT', 'GPT-4'"):
        est.output_length(10, model="Llama")
    with pytest.raises(UnknownNameError, match="unknown log_type"):
        est.output_length(10, log_type="Batch log")
    with pytest.raises(UnknownNameError, match="unknown model"):
        est.output_length_batch({"prompt_tokens": [3], "model": ["Llama"]})
    with pytest.raises(InvalidInputError, match="empty frame"):
        est.output_length_batch(pl.DataFrame({"prompt_tokens": []},
                                             schema={"prompt_tokens": pl.Int64}))


#: one single call per registered kind, on the Estimator `est` (the scheduler's hot path)
HOT_CALLS = {
    "output_length": "est.output_length(500, model='ChatGPT')",
    "kernel_latency": "est.kernel_latency('bmm', [8, 256, 256, 256], {spec!r})",
    "interference": "est.interference({{'ipc': [1.5, 1.2], 'llc_miss_rate': [0.3, 0.5]}})",
    "moe_congestion": "est.moe_congestion([300, 200, 100, 50, 20, 10, 5, 2], "
                      "[0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2])",
    "operator_latency": "est.operator_latency('gemm', 'h100-sxm', M=256, N=4096, K=4096)",
    "step_time": "est.step_time('llama-3.1-8b', 'l40s', [512], None, [1024] * 8)",
}
#: heavy modules no runtime may import (torch: only the interference networks need it)
HEAVY = ("duckdb", "polars", "lightning", "pytorch_lightning", "lightgbm")


def test_hot_path_covers_every_registered_kind():
    from servecast.predictors.registry import KINDS

    assert set(HOT_CALLS) == set(KINDS)


@pytest.mark.parametrize("kind", [
    pytest.param(k, marks=pytest.mark.slow) if k in ("interference", "kernel_latency",
                                                     "step_time") else k
    for k in sorted(HOT_CALLS)])
def test_hot_path_imports_stay_light(fitted_kind, kind):
    """Loading a kind through the Estimator and estimating one request imports none of
    HEAVY (nor torch, except for interference's networks); checked in a fresh process."""
    from servecast.predictors.kernel_latency.fixture import DEVICES

    path = fitted_kind(kind)[3]
    heavy = HEAVY + (() if kind == "interference" else ("torch",))
    code = (
        "import sys\n"
        "import servecast.estimator as e\n"
        f"est = e.Estimator.load({str(path.parent)!r})\n"
        f"x = {HOT_CALLS[kind].format(spec=DEVICES['a100'])}\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))\n"
        "print(est.kinds, bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == f"{[kind]} []", out


def test_session_context_changes_the_estimate(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for s in range(600):  # replies echo the previous reply's length
        prev = int(rng.integers(10, 2000))
        for turn in range(1, 4):
            out = prev if turn > 1 else int(rng.integers(10, 2000))
            rows.append({"session_id": f"s{s}", "turn": turn, "prompt_tokens": 50,
                         "output_tokens": out})
            prev = out
    model = create("metadata", n_estimators=30, learning_rate=0.1).fit(pl.DataFrame(rows))
    model.save(tmp_path / "m")
    rt = Estimator.load(tmp_path / "m").runtime("output_length")
    rt.observe("x", 50, 20)
    short = rt.output_length(50, session_id="x")
    rt.observe("y", 50, 1500)
    long = rt.output_length(50, session_id="y")
    assert long.p50 > 4 * short.p50
    # only the most recently used sessions are kept: past the cap the least recently used
    # one is forgotten and scores as a new session
    rt.sessions.cap = 2
    rt.output_length(50, session_id="x")
    rt.output_length(50, session_id="y")  # x is now the least recently used
    rt.observe("z", 50, 700)
    assert "x" not in rt.sessions and len(rt.sessions) == 2
    assert rt.output_length(50, session_id="x") == rt.output_length(50, session_id="new")
    assert rt.sessions.get("y") == (1, 50.0, 1500.0)


def test_observe_output_feeds_the_prompt_length_history(models_dir):
    est = Estimator.load(models_dir[0])
    rt = est.runtime("output_length")
    assert rt.history is not None  # the metadata model uses the history features
    n = rt.history.same.get(777.0, [0, 0, 0])[2]
    est.observe_output(None, 777, 300, arrival_s=10.0)
    est.observe_output(None, 777, 500, arrival_s=12.0)
    assert rt.history.same[777.0][:3] == [500.0, 300.0, n + 2]
    e = est.output_length(777, arrival_s=13.0)
    assert 0 <= e.p50 <= e.p90 <= e.p99


# -- a models dir is input: malformed files and pickles are refused, naming the file ---------
def _corrupt_copy(src, dst, file: str, text: str):
    """A copy of models dir `src` at `dst` with `file` (relative) rewritten to `text`."""
    import shutil

    shutil.copytree(src, dst)
    (dst / file).write_text(text)
    return dst


def _state_without(key: str, models_root) -> str:
    state = json.loads((models_root / "output_length" / "state.json").read_text())
    state.pop(key)
    return json.dumps(state)


def _state_with(key: str, value, models_root) -> str:
    state = json.loads((models_root / "output_length" / "state.json").read_text())
    return json.dumps({**state, key: value})


#: (file under the models dir, content maker(models root), what the error must say)
MALFORMED = [
    ("output_length/model_card.json", lambda r: "{not json",
     "line 1 column 2: not valid JSON"),
    ("output_length/model_card.json", lambda r: "[1, 2]", "top level is a JSON array"),
    ("output_length/model_card.json", lambda r: "{}", "key 'kind' missing"),
    ("output_length/model_card.json", lambda r: '{"kind": 3}',
     "key 'kind' is a JSON number, expected string"),
    ("output_length/state.json", lambda r: "{not json", "not valid JSON"),
    ("output_length/state.json", lambda r: '["format", 2]', "top level is a JSON array"),
    ("output_length/state.json", lambda r: _state_without("calibrator", r),
     "key 'calibrator' missing"),
    ("output_length/state.json", lambda r: _state_with("encoder", {"columns": 5}, r),
     "key 'encoder.columns' is a JSON number, expected array"),
    ("moe_congestion/params.json", lambda r: '{"layers": {"0": 1}}',
     "key 'layers' is a JSON object, expected array"),
    ("moe_congestion/params.json", lambda r: '{"layers": [{"layer": 0}]}', "numeric 'beta'"),
]


@pytest.fixture(scope="module")
def two_kinds(models_dir, tmp_path_factory):
    """A models dir with the output-length model and a planted-equilibrium MoE game."""
    import shutil

    from servecast.predictors.moe_congestion.game import CongestionGame
    from servecast.predictors.moe_congestion.synthetic import planted_batches

    root = tmp_path_factory.mktemp("two_kinds")
    shutil.copytree(models_dir[0] / "output_length", root / "output_length")
    pb = planted_batches(beta=2.0, gamma=5.0, n_batches=12, n_types=1, n_experts=8)
    game = CongestionGame(n_bootstrap=0).fit_arrays(pb.loads, pb.quality[:, 0, :])
    game.save(root / "moe_congestion")
    return root


@pytest.mark.parametrize("file,content,says", MALFORMED,
                         ids=[f"{f.split('/')[1]}-{s[:24]}" for f, _, s in MALFORMED])
def test_malformed_model_files_name_the_file(two_kinds, tmp_path, file, content, says):
    from servecast.errors import ModelVersionError

    bad = _corrupt_copy(two_kinds, tmp_path / "models", file, content(two_kinds))
    kind = file.split("/")[0]
    with pytest.raises(ModelVersionError) as err:
        Estimator.load(bad).runtime(kind)
    assert str(bad / file) in str(err.value) and says in str(err.value)


@pytest.mark.parametrize("file,content,says", MALFORMED[::3],
                         ids=[f"{f.split('/')[1]}-{s[:24]}" for f, _, s in MALFORMED[::3]])
def test_serve_refuses_malformed_models_dir_with_exit_2(two_kinds, tmp_path, capsys, file,
                                                        content, says):
    """`servecast serve` loads every model at startup: exit 2, one line naming the file."""
    from servecast.cli import main

    bad = _corrupt_copy(two_kinds, tmp_path / "models", file, content(two_kinds))
    assert main(["serve", "--models", str(bad), "--port", "9"]) == 2
    err = capsys.readouterr().err
    assert str(bad / file) in err and says in err and "Traceback" not in err


def plant_pickle(file, marker) -> None:
    """A torch file whose unpickling writes `marker` (what an attacker's .pt would do)."""
    import pathlib

    import torch

    class Payload:
        def __reduce__(self):
            return pathlib.Path.write_text, (pathlib.Path(marker), "code ran")

    torch.save({"encoder.weight": Payload()}, file)


@pytest.mark.slow  # ~15 s: loads the sentence encoder before its tuned weights
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    """A crafted encoder_tuned.pt in a text model dir: refused naming the file, nothing run,
    even with torch's pre-2.6 default (weights_only=False) forced through the environment."""
    import torch

    from servecast.errors import ModelVersionError
    from servecast.predictors.output_length.embeddings import TUNED_FILE, load_encoder

    probe = tmp_path / "probe"
    probe.mkdir()
    plant_pickle(probe / "x.pt", probe / "ran")
    torch.load(probe / "x.pt", weights_only=False)  # the payload is live: a plain unpickle
    assert (probe / "ran").read_text() == "code ran"  # runs it

    marker = tmp_path / "pwned"
    plant_pickle(tmp_path / TUNED_FILE, marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ModelVersionError, match=f"{TUNED_FILE}: not a plain tensor state"):
        load_encoder(tuned=tmp_path)
    assert not marker.exists()


@pytest.mark.slow  # a CLI subprocess
def test_cli_warns_when_prompt_text_is_ignored(models_dir):
    """A prompt text given to a model that reads none is said to be ignored (stderr), the
    estimate still printed; without --prompt-text nothing is said."""
    root, _ = models_dir
    cmd = [sys.executable, "-m", "servecast.cli", "estimate", "output-length", "--models",
           str(root), "--prompt-tokens", "812"]
    with_text = subprocess.run([*cmd, "--prompt-text", "hello"], capture_output=True, text=True)
    plain = subprocess.run(cmd, capture_output=True, text=True)
    assert with_text.returncode == plain.returncode == 0, with_text.stderr + plain.stderr
    assert "--prompt-text ignored" in with_text.stderr
    assert "ignored" not in plain.stderr
    assert "812" in with_text.stdout
