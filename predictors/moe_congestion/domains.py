"""Predict one domain's expert loads from the other domains' (leave-one-domain-out).

Baselines: uniform (1/E) and the mean of the other domains' load shares. Congestion model:
invert each training domain's loads to single-type utilities under gamma
(u_e = log l_e + gamma*l_e, `preferences_from_loads`), average the utilities, temper them by
beta <= 1 and solve the equilibrium at the same gamma. gamma = 0, beta = 1 gives the
normalized geometric mean, gamma -> inf the arithmetic mean, beta -> 0 the uniform split;
(beta, gamma) are picked by an inner leave-one-out over the training domains only (the
held-out domain never informs its own prediction).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.moe_congestion.equilibrium import equilibrium, preferences_from_loads
from servecast.predictors.moe_congestion.fitting import l1, normalize_loads

GAMMAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
BETAS = (0.25, 0.5, 0.75, 1.0)


def congestion_mean(train: np.ndarray, gamma: float, beta: float = 1.0) -> np.ndarray:
    """Equilibrium loads (E,) of the beta-tempered mean utilities of `train` (D, E) shares."""
    u = preferences_from_loads(train, gamma).mean(axis=0)
    return equilibrium(beta * u, None, 1.0, gamma)[0]


def pick_params(train: np.ndarray, gammas=GAMMAS, betas=BETAS) -> tuple[float, float]:
    """(beta, gamma) minimizing the inner leave-one-out L1 over the rows of `train`."""
    D = train.shape[0]
    if D < 2:
        return 1.0, 0.0
    betas = np.asarray(betas, dtype=float)
    best = (np.inf, 1.0, 0.0)
    for g in gammas:
        # all inner folds and betas in one batched equilibrium solve: rows (fold, beta)
        u = np.stack([preferences_from_loads(np.delete(train, i, 0), g).mean(axis=0)
                      for i in range(D)])  # (D, E)
        pred = equilibrium((betas[None, :, None] * u[:, None, :]).reshape(-1, u.shape[1]),
                           None, 1.0, g).reshape(D, len(betas), -1)
        err = np.abs(pred - train[:, None, :]).sum(-1).mean(0)  # (betas,)
        for b, e in zip(betas, err, strict=True):  # first minimum, as the old loop order
            best = min(best, (float(e), float(b), float(g)))
    return best[1], best[2]


def leave_one_domain_out(loads: np.ndarray) -> list[dict]:
    """For loads (D, E) (counts or shares, one row per domain): per held-out row the L1 (in
    [0, 2]) of uniform, mean-of-domains and congestion predictions, and the chosen
    (beta, gamma)."""
    shares = normalize_loads(loads)
    D, E = shares.shape
    out = []
    for d in range(D):
        train, test = np.delete(shares, d, 0), shares[d]
        b, g = pick_params(train)
        out.append({
            "held_out": d, "gamma": g, "beta": b,
            "l1_uniform": float(l1(np.full(E, 1.0 / E), test)),
            "l1_mean_domains": float(l1(train.mean(0), test)),
            "l1_congestion": float(l1(congestion_mean(train, g, b), test)),
        })
    return out


def domain_transfer(s: pl.DataFrame) -> pl.DataFrame:
    """Leave-one-domain-out prediction of each domain's load shares from the other domains'
    on a shares frame (`analytics.moe.shares`: model, checkpoint, assignment, layer, domain,
    expert, tokens): frame [model, checkpoint, assignment, layer, held_out, l1_uniform,
    l1_mean_domains, l1_congestion, gamma]; groups with < 3 domains are skipped."""
    rows = []
    for key, part in s.group_by(["model", "checkpoint", "assignment", "layer"],
                                maintain_order=True):
        wide = part.pivot(on="expert", index="domain", values="tokens").sort("domain")
        domains = wide["domain"].to_list()
        if len(domains) < 3:
            continue
        mat = np.nan_to_num(wide.drop("domain").to_numpy().astype(float))
        for r in leave_one_domain_out(mat):
            rows.append(dict(zip(["model", "checkpoint", "assignment", "layer"], key, strict=True))
                        | {**r, "held_out": domains[r["held_out"]]})
    if not rows:
        raise InvalidInputError("domain transfer needs >= 3 domains per (model, layer)")
    return pl.DataFrame(rows)


def transfer_summary(transfer: pl.DataFrame) -> pl.DataFrame:
    """Mean held-out L1 per (model, assignment) of the three predictors, and the congestion
    model's ratio to the better baseline (< 1 = better)."""
    return (transfer.group_by(["model", "assignment"]).agg(
        pl.len().alias("cases"), pl.col("l1_uniform").mean(), pl.col("l1_mean_domains").mean(),
        pl.col("l1_congestion").mean(), pl.col("gamma").median().alias("gamma_median"))
        .with_columns(ratio_vs_best_baseline=pl.col("l1_congestion")
                      / pl.min_horizontal("l1_uniform", "l1_mean_domains"))
        .sort(["model", "assignment"]))
