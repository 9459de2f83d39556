"""MoE routing as a congestion game: the gamma_eff estimator (`CongestionGame`), a small MoE
LM trained on ShareGPT text with routing snapshots, `RoutingRecorder` hooks, quality
estimators, trajectories and phases. See README.md in this folder for the operationalization.

Heavy parts (torch) are imported lazily: `from servecast.predictors.moe_congestion.model
import SmallMoELM`.
"""

from servecast.predictors.moe_congestion.game import CongestionGame

__all__ = ["CongestionGame"]
