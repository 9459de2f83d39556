"""Interference / VM performance-degradation predictor (CloudFormer-style dual-branch
Transformer) over long-format metric windows, its baselines, Azure VM Noise tasks and a
host collector. See predictor.py for the interface."""

from servecast.predictors.interference.predictor import MODELS, InterferencePredictor

__all__ = ["InterferencePredictor", "MODELS"]
