"""gamma_eff = gamma_explicit + gamma_implicit: the congestion the auxiliary balancing loss
imposes, and the rest, which the router learned on its own.

A Switch-style auxiliary loss `c * E * sum_e f_e * P_e` on a layer (c: its coefficient for
that layer, E experts, f_e the layer's share of routing assignments, P_e the mean router
probability over the same tokens as the per-token cross-entropy mean) changes the loss by
`c * E * f_e` per unit of one token's probability moved to expert e. Per token, sending it to
e therefore costs `c * E * l_e` nats on top of its loss, with l_e the load share: a
congestion term. In the game's logit units, where quality in nats enters as `beta * q`,

    gamma_explicit = beta * c * E * s

with s = 1 when f_e are assignment shares (servecast's `SmallMoELM`: sum_e f_e = 1) and
s = top_k for Hugging Face's `load_balancing_loss_func` (f_e: tokens routed to e, summing to
top_k). gamma_implicit = gamma_eff - gamma_explicit (negative: the routing is less balanced
than the loss alone would make it). The decomposition needs quality in nats (oracle, taylor):
with router log-probabilities beta has no nats scale and the split is not defined.
"""

from __future__ import annotations

import polars as pl

from servecast.errors import InvalidInputError

NATS_QUALITIES = ("oracle", "taylor")


def explicit_gamma(beta: float, aux_coef: float, n_experts: int, f_scale: float = 1.0) -> float:
    """gamma_explicit (logit units per unit load share) of a layer whose auxiliary loss has
    coefficient `aux_coef`, for a game fitted with quality in nats at inverse temperature
    `beta` (per nat); `f_scale` as s in the module docstring."""
    if aux_coef < 0 or n_experts < 1 or f_scale <= 0:
        raise InvalidInputError(
            f"aux_coef {aux_coef} must be >= 0, n_experts {n_experts} >= 1, f_scale "
            f"{f_scale} > 0")
    return float(beta) * aux_coef * n_experts * f_scale


def small_moe_aux_coef(alpha: float, layers: int) -> float:
    """Per-layer coefficient of `SmallMoELM`'s loss: alpha times the mean over its layers."""
    return alpha / layers


def decompose(games: pl.DataFrame, aux_coef: float, n_experts: int,
              f_scale: float = 1.0) -> pl.DataFrame:
    """`games` (columns beta, gamma; optional beta_lo / beta_hi) with gamma_explicit (and its
    CI gamma_explicit_lo / _hi from beta's, where present) and gamma_implicit added."""
    k = explicit_gamma(1.0, aux_coef, n_experts, f_scale)
    cols = [(pl.col("beta") * k).alias("gamma_explicit")]
    if {"beta_lo", "beta_hi"} <= set(games.columns):
        cols += [(pl.col("beta_lo") * k).alias("gamma_explicit_lo"),
                 (pl.col("beta_hi") * k).alias("gamma_explicit_hi")]
    return games.with_columns(cols).with_columns(
        gamma_implicit=pl.col("gamma") - pl.col("gamma_explicit"))
