"""Scheduling policies of the what-if replay: the priority and KV reservation each gives.

Policies: fcfs, sjf_pred (shortest predicted p50 first), sjf_p90 (shortest predicted p90
first: where outputs are bimodal the p50 sits on one mode, the p90 tells whether the long mode
is likely), sjf_oracle (true output length), sjf_pred_aging (predicted p50 minus
`aging_tokens_per_s` x seconds waited: every waiting request ages at the same rate, so this is
the static key p50 + rate x arrival; it bounds the starvation of long requests), kv_p90 /
kv_worst (FCFS order, admit only if prompt + reserved output fits the budget, the reservation
being the predicted p90 or the worst case `max_output`).
Token counts in tokens, times in seconds.
"""

from __future__ import annotations

import numpy as np

from servecast.errors import InvalidInputError
from servecast.simulator.engine import ServingConfig

POLICIES = ("fcfs", "sjf_pred", "sjf_p90", "sjf_oracle", "sjf_pred_aging", "kv_p90",
            "kv_worst")


def policy_inputs(name: str, p50: np.ndarray, p90: np.ndarray, out: np.ndarray,
                  arr: np.ndarray, cfg: ServingConfig) -> dict[str, np.ndarray]:
    """`simulate`'s priority / reserve arguments of policy `name` for requests with
    predicted `p50` / `p90` and true `out` tokens, arriving at `arr` (s)."""
    setups = {
        "fcfs": {}, "sjf_pred": {"priority": p50}, "sjf_p90": {"priority": p90},
        "sjf_oracle": {"priority": out},
        "sjf_pred_aging": {"priority": p50 + cfg.aging_tokens_per_s * arr},
        "kv_p90": {"reserve": np.ceil(p90)},
        "kv_worst": {"reserve": np.full(len(out), float(cfg.max_output))},
    }
    return setups[name]


#: the policies of the step-wise engine (`servecast.simulator.core.Engine`)
ENGINE_POLICIES = ("fcfs", "sjf_pred", "sjf_p90", "sjf_oracle", "sjf_pred_aging", "kv_p90")
#: the prediction each policy reads from a request
_NEEDS = {"sjf_pred": "p50", "sjf_p90": "p90", "sjf_pred_aging": "p50", "kv_p90": "p90"}


def priority_key(name: str, req, aging_tokens_per_s: float) -> float:
    """The engine's admission key of request `req` under policy `name` (lower first): FCFS
    and kv_p90 by arrival, SJF by predicted p50 / p90 / true output tokens, aging SJF by
    p50 + `aging_tokens_per_s` x arrival (every waiting request ages at the same rate, so
    this static key orders them as p50 - rate x seconds waited would)."""
    need = _NEEDS.get(name)
    if need and not getattr(req, need) == getattr(req, need):  # NaN: no prediction
        raise InvalidInputError(
            f"policy {name} needs each request's predicted output length ({need}); request "
            f"{req.request_id!r} has none: give predictions (`--lengths-model DIR`) or use "
            "--policy fcfs")
    if name == "sjf_pred":
        return float(req.p50)
    if name == "sjf_p90":
        return float(req.p90)
    if name == "sjf_oracle":
        return float(req.output_tokens)
    if name == "sjf_pred_aging":
        return float(req.p50) + aging_tokens_per_s * float(req.arrival_s)
    return float(req.arrival_s)


def reservation(name: str, req) -> int:
    """KV tokens `req` reserves at admission: prompt + predicted p90 output under kv_p90,
    else 0 (no reservation)."""
    if name != "kv_p90":
        return 0
    return int(req.prompt_tokens + np.ceil(req.p90))
