"""`Compiled`'s engine overhead: the step-time runtime's terms fitted for the deployment's
engine family, else the runtime's default (documented in simulator/deployment.py), through
`servecast simulate` / `servecast capacity --step-model` too."""

from __future__ import annotations

import json
import shutil

import pytest

from servecast import gpus
from servecast.cli import main
from servecast.predictors.step_time.runtime import Runtime, ring_steps
from servecast.simulator import Compiled, Deployment

VLLM = {"step_ms": 1.5, "ring_cycles": 2000.0, "seq_ms": 0.05}
TRTLLM = {"step_ms": 4.0, "ring_cycles": 1000.0, "seq_ms": 0.2}
BATCH = ([512, 300], [0, 1024], [900] * 6)  # prefill chunks, their offsets, decode contexts


def _runtime(overhead_ms=None) -> Runtime:
    """Physics operators with the vLLM and TensorRT-LLM overheads of a trained model."""
    return Runtime({}, [], {}, overhead_ms, {"vllm": VLLM, "trtllm": TRTLLM})


def _added_ms(terms: dict, dep: Deployment) -> float:
    """The overhead `terms` add to one step of BATCH (runtime.py's module docstring)."""
    compiled = Compiled(dep)
    ring = ring_steps(compiled.config.layers, dep.tp) * terms["ring_cycles"]
    return (terms["step_ms"] + ring / (gpus.resolve_spec(dep.gpu)["Freq"] * 1e3)
            + terms["seq_ms"] * (len(BATCH[0]) + len(BATCH[2])))


@pytest.mark.parametrize("engine", ["vllm", "trtllm"])
def test_each_family_steps_with_the_overhead_fitted_for_it(engine):
    dep = Deployment(gpu="h100-sxm", tp=2, engine=engine)
    learned, physics = Compiled(dep, _runtime()), Compiled(dep)
    terms = {"vllm": VLLM, "trtllm": TRTLLM}[engine]
    assert learned.overhead == terms and learned.overhead_engine == engine
    assert learned.overhead_text().endswith(f"(fitted for {engine})")
    assert learned.step_ms(*BATCH) - physics.step_ms(*BATCH) == pytest.approx(
        _added_ms(terms, dep), rel=1e-9)
    # the table fast paths the engine calls carry the same overhead
    prefill, offsets, decode = BATCH
    assert learned.batch_ms(prefill, offsets, len(decode), sum(decode)) == pytest.approx(
        learned.step_ms(*BATCH), rel=1e-9)
    assert learned.decode_ms(6, [900.0])[0] == pytest.approx(
        learned.step_ms((), None, [900] * 6), rel=1e-9)


def test_a_family_without_fitted_overhead_falls_back_to_the_runtimes_default():
    """sglang has none fitted: the default engine's (vLLM's) terms; a model saved with a
    constant overhead: that constant; physics only: 0 ms. Never an error."""
    dep = Deployment(gpu="h100-sxm", engine="sglang")
    vllm = Compiled(Deployment(gpu="h100-sxm"), _runtime())
    fallback = Compiled(dep, _runtime())
    assert fallback.overhead == VLLM and fallback.overhead_engine == "vllm"
    assert "(vllm's; none fitted for sglang)" in fallback.overhead_text()
    assert fallback.step_ms(*BATCH) == vllm.step_ms(*BATCH)
    constant = Compiled(dep, _runtime(overhead_ms=2.5))
    assert constant.overhead_engine is None and constant.overhead["step_ms"] == 2.5
    assert "(the default constant; none fitted for sglang)" in constant.overhead_text()
    physics = Compiled(dep)
    assert physics.overhead == {"step_ms": 0.0, "ring_cycles": 0.0, "seq_ms": 0.0}
    assert constant.step_ms(*BATCH) - physics.step_ms(*BATCH) == pytest.approx(2.5)


@pytest.fixture(scope="module")
def trt_model(fitted_kind, tmp_path_factory):
    """A saved step-time model (the registry's fixture: learned operator residuals) whose
    card holds vLLM and TensorRT-LLM overheads, as `servecast train step-time` saves them."""
    *_, path = fitted_kind("step_time")
    model = tmp_path_factory.mktemp("models") / "step_time"
    shutil.copytree(path, model)
    card = json.loads((model / "model_card.json").read_text())
    card["engine_overheads"] = {"vllm": VLLM, "trtllm": TRTLLM}
    card["params"]["overhead_ms"] = None  # no constant: the default engine's terms
    (model / "model_card.json").write_text(json.dumps(card))
    return model


@pytest.mark.slow
def test_cli_simulate_and_capacity_use_the_engines_overhead(trt_model, tmp_path, capsys):
    common = ["--gpu", "h100-sxm", "--step-model", str(trt_model)]
    sim = ["simulate", "workload:sharegpt", "--num-prompts", "30", "--rate", "4", *common]
    lines = {}
    for engine in ("vllm", "trtllm", "sglang"):
        assert main([*sim, "--engine", engine]) == 0
        line = next(s for s in capsys.readouterr().out.splitlines()
                    if s.startswith("Engine overhead per step:"))
        lines[engine] = line
        assert line.endswith({"vllm": "(fitted for vllm)", "trtllm": "(fitted for trtllm)",
                              "sglang": "(vllm's; none fitted for sglang)"}[engine])
    assert "4.0 ms + 1000 cycles per all-reduce ring step + 0.2 ms per sequence" in lines[
        "trtllm"]
    runs = {}
    for engine in ("vllm", "trtllm"):
        out = tmp_path / f"{engine}.json"
        assert main(["capacity", "--model", "llama-3.1-8b", *common, "--engine", engine,
                     "--tpot-ms", "60", "--requests", "100", "--seeds", "1",
                     "--json", str(out)]) == 0
        runs[engine] = json.loads(out.read_text())
    assert runs["trtllm"]["engine_overhead"].endswith("(fitted for trtllm)")
    # TensorRT-LLM's larger per-step and per-sequence overhead serves fewer requests
    assert runs["trtllm"]["saturation_rps"] < runs["vllm"]["saturation_rps"]
