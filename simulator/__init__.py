"""The what-if simulator: `engine` (one continuous-batching instance, iteration by
iteration), `policies` (the scheduling policies' priorities and reservations) and `replay`
(a trace replayed under each policy with predicted output lengths)."""

from servecast.simulator.engine import ServingConfig, capacity, scale_arrivals, simulate
from servecast.simulator.policies import POLICIES, policy_inputs
from servecast.simulator.replay import config_dict, sjf_gain, whatif, whatif_trace

__all__ = ["POLICIES", "ServingConfig", "capacity", "config_dict", "policy_inputs",
           "scale_arrivals", "simulate", "sjf_gain", "whatif", "whatif_trace"]
