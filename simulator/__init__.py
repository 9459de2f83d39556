"""The what-if simulator: `engine` (one continuous-batching instance, iteration by
iteration), `policies` (the scheduling policies' priorities and reservations) and `replay`
(a trace replayed under each policy with predicted output lengths)."""

from servecast.simulator.engine import ServingConfig, capacity, scale_arrivals, simulate
from servecast.simulator.policies import POLICIES, policy_inputs
from servecast.simulator.replay import (
    CRITERION_LOADS,
    CRITERION_SEEDS,
    config_dict,
    heldout,
    no_gain_reason,
    share_summary,
    sjf_gain,
    whatif,
    whatif_share,
    whatif_trace,
)

__all__ = ["CRITERION_LOADS", "CRITERION_SEEDS", "POLICIES", "ServingConfig", "capacity",
           "config_dict", "heldout", "no_gain_reason", "policy_inputs", "scale_arrivals",
           "share_summary", "simulate", "sjf_gain", "whatif", "whatif_share", "whatif_trace"]
