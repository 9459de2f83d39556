"""MoE routing as a congestion game: the gamma_eff estimator (`CongestionGame`), a small MoE
LM trained on ShareGPT text with routing snapshots, `RoutingRecorder` hooks, quality
estimators, trajectories and phases, and the split of gamma_eff into the auxiliary loss's
explicit part and the implicit rest (`explicit_gamma`). See README.md in this folder for
the operationalization.

Everything loads lazily (the runtime, runtime.py, imports numpy and scipy only); heavy parts
(torch) are imported where used: `from servecast.predictors.moe_congestion.model import
SmallMoELM`.
"""

from servecast.registry import resolve

_LAZY = {"CongestionGame": "game:CongestionGame", "explicit_gamma": "decomposition:explicit_gamma"}


def __getattr__(name: str):
    if name in _LAZY:
        return resolve("servecast.predictors.moe_congestion", _LAZY[name])
    raise AttributeError(name)


__all__ = ["CongestionGame", "explicit_gamma"]
