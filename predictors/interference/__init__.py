"""Interference / VM performance-degradation predictor (CloudFormer-style dual-branch
Transformer) over long-format metric windows, its baselines, Azure VM Noise tasks and a
host collector. See predictor.py for the interface.

`InterferencePredictor` and `MODELS` load lazily, so the runtime (runtime.py) imports
neither polars nor Lightning.
"""


def __getattr__(name: str):
    if name in ("InterferencePredictor", "MODELS"):
        from servecast.predictors.interference import predictor

        return getattr(predictor, name)
    raise AttributeError(name)


__all__ = ["InterferencePredictor", "MODELS"]
