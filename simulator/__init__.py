"""The simulator.

Serving simulation (issue 24): `deployment` (a `Deployment` compiled by `Compiled` into KV
blocks and a step-time function), `core` (the step-wise `Engine`: `add(Request)`,
`step() -> Step(start_s, duration_s, first_token_ids, token_ids, finished_ids,
preempted_ids, prefill_tokens, batch)`), `cluster` (replicas behind a `Router`,
`Cluster.add/step`, and the batch `simulate_trace`), `metrics` (vLLM bench's metrics and
result files).

What-if replay (the earlier linear-cost model): `engine` (one continuous-batching instance,
iteration by iteration), `policies` (the scheduling policies' priorities and reservations)
and `replay` (a trace replayed under each policy with predicted output lengths)."""

from servecast.simulator.cluster import ROUTERS, Cluster, Router, SimRun, simulate_trace
from servecast.simulator.core import Engine, Request, Step
from servecast.simulator.deployment import ENGINE_EFFICIENCY, Compiled, Deployment
from servecast.simulator.engine import ServingConfig, capacity, scale_arrivals, simulate
from servecast.simulator.policies import ENGINE_POLICIES, POLICIES, policy_inputs
from servecast.simulator.replay import config_dict, sjf_gain, whatif, whatif_trace

__all__ = ["ENGINE_EFFICIENCY", "ENGINE_POLICIES", "POLICIES", "ROUTERS", "Cluster", "Compiled",
           "Deployment", "Engine", "Request", "Router", "ServingConfig", "SimRun", "Step",
           "capacity", "config_dict", "policy_inputs", "scale_arrivals", "simulate",
           "simulate_trace", "sjf_gain", "whatif", "whatif_trace"]
