"""Output-length prediction: quantiles (p50, p90, p99) and mean of response tokens.

Models (all `OutputLengthPredictor`s, one protocol: fit / predict / update / evaluate /
save / load): `metadata` (LightGBM quantile boosting), `text` (sentence embeddings + LightGBM
quantile heads), and baselines `global`, `segment`, `prompt_bins`, `sliding_window`.
`OutputLengthPredictor.create(name, **params)` builds one; `OutputLengthPredictor.load(dir)`
loads whichever was saved. Schedulers use `runtime.Runtime` through `servecast.Estimator`.

The metadata model's features include the prompt-length history (history.py): outputs of
finished earlier requests with exactly the same prompt_tokens, the same 16-token length
bucket, and any request (what they add: benchmarks/output_length_eval.py, docs/results.md).
Such models are served from
their compiled trees (forest.py), the runtime keeping the history through `observe`.
"""

from __future__ import annotations

from pathlib import Path

from servecast.errors import ModelVersionError, UnknownNameError
from servecast.registry import resolve

#: registry name -> "module:Class" (imported on demand)
MODELS = {
    "metadata": "gbm:MetadataModel",
    "text": "text:TextModel",
    "global": "baselines:GlobalQuantiles",
    "segment": "baselines:SegmentQuantiles",
    "prompt_bins": "baselines:PromptBinQuantiles",
    "sliding_window": "baselines:SlidingWindow",
}


def __getattr__(name: str):
    # OutputLengthPredictor loads lazily so the runtime path does not import polars
    if name in ("OutputLengthPredictor", "OutputLengthModel"):
        from servecast.predictors.output_length.core import OutputLengthModel

        return OutputLengthModel
    raise AttributeError(name)


def model_class(name: str, path: Path | None = None):
    """The class registered as `name` (UnknownNameError / ModelVersionError for a saved dir)."""
    if name not in MODELS:
        msg = f"unknown output-length model {name!r}; known: {', '.join(MODELS)}"
        if path is not None:
            raise ModelVersionError(f"{path}: {msg}; retrain it with this servecast version")
        raise UnknownNameError(msg)
    return resolve("servecast.predictors.output_length", MODELS[name])


def create(name: str = "metadata", **params):
    """A new, unfitted output-length model of kind `name` (see MODELS)."""
    return model_class(name)(**params)

__all__ = ["MODELS", "OutputLengthPredictor", "create", "model_class"]
