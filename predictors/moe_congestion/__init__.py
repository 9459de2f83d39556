"""MoE routing as a congestion game: the gamma_eff estimator (`CongestionGame`), a small MoE
LM trained on ShareGPT text with routing snapshots, `RoutingRecorder` hooks, quality
estimators, trajectories and phases, and the split of gamma_eff into the auxiliary loss's
explicit part and the implicit rest (`explicit_gamma`). See README.md in this folder for
the operationalization.

Heavy parts (torch) are imported lazily: `from servecast.predictors.moe_congestion.model
import SmallMoELM`.
"""

from servecast.predictors.moe_congestion.decomposition import explicit_gamma
from servecast.predictors.moe_congestion.game import CongestionGame

__all__ = ["CongestionGame", "explicit_gamma"]
