"""MoE routing as a congestion game: the gamma_eff estimator (`CongestionGame`), a small MoE
LM trained on ShareGPT text with routing snapshots, `RoutingRecorder` hooks, quality
estimators, trajectories and phases, and the split of gamma_eff into the auxiliary loss's
explicit part and the implicit rest (`explicit_gamma`). See README.md in this folder for
the operationalization.

Everything loads lazily (the runtime, runtime.py, imports numpy and scipy only); heavy parts
(torch) are imported where used: `from servecast.predictors.moe_congestion.model import
SmallMoELM`.
"""

_LAZY = {"CongestionGame": "game", "explicit_gamma": "decomposition"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"servecast.predictors.moe_congestion.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(name)


__all__ = ["CongestionGame", "explicit_gamma"]
