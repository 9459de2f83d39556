"""Logit equilibrium of the routing congestion game (numpy only, batched).

Token type k (share w_k) picks expert e with probability softmax_e(beta*q_ke - gamma*l_e);
the expert load shares l solve l_e = sum_k w_k p_ke(l). For gamma >= 0 the equilibrium is the
unique minimizer of the strictly convex potential

    Psi(l) = gamma/2 |l|^2 + sum_k w_k logsumexp_e(beta*q_ke - gamma*l_e),

since grad Psi = gamma*(l - F(l)). We solve it by damped fixed-point iteration
l <- l + t * P^-1 (F(l) - l), preconditioned by P = I + gamma*sum_k w_k Cov(p_k) (i.e. a
Newton step) with backtracking on Psi, which converges in a few steps for any gamma.
"""

from __future__ import annotations

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=-1)
    return m + np.log(np.exp(z - m[..., None]).sum(axis=-1))


def as_batches(quality: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Normalize shapes: quality (E,), (B, E) or (B, K, E) -> (B, K, E); weights -> (B, K)."""
    q = np.asarray(quality, dtype=float)
    if q.ndim == 1:
        q = q[None, None, :]
    elif q.ndim == 2:
        q = q[:, None, :]
    B, K, _ = q.shape
    if weights is None:
        w = np.full((B, K), 1.0 / K)
    else:
        w = np.asarray(weights, dtype=float).reshape(B, K)
        w = w / np.clip(w.sum(axis=1, keepdims=True), 1e-300, None)
    return q, w


def equilibrium(
    quality: np.ndarray,
    weights: np.ndarray | None = None,
    beta: float = 1.0,
    gamma: float = 0.0,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> np.ndarray:
    """Equilibrium load shares (B, E) (rows sum to 1) for quality (B, K, E) and type shares (B, K).

    `quality` may also be (B, E) or (E,) (a single token type). gamma >= 0 (load-share units).
    """
    q, w = as_batches(quality, weights)
    u = beta * q
    load = np.einsum("bk,bke->be", w, _softmax(u))
    if gamma <= 0:
        return load

    def potential(x):
        return 0.5 * gamma * (x**2).sum(-1) + (w * _logsumexp(u - gamma * x[:, None])).sum(-1)

    psi = potential(load)
    for _ in range(max_iter):
        p = _softmax(u - gamma * load[:, None, :])  # (B, K, E)
        F = np.einsum("bk,bke->be", w, p)
        r = F - load
        if np.abs(r).max() < tol:
            break
        step = _newton_step(F, w, p, gamma, r)
        t = np.ones((load.shape[0], 1))
        for _ in range(30):  # backtracking: Newton on a convex potential, per batch
            cand = load + t * step
            new = potential(cand)
            bad = new > psi + 1e-12 * np.abs(psi)
            if not bad.any():
                break
            t[bad] *= 0.5
        load, psi = cand, new
    return load / load.sum(axis=1, keepdims=True)


def _newton_step(F, w, p, gamma, r):
    """Solve (I + gamma*Cov) x = r with Cov = diag(F) - V V^T, V = sqrt(w_k) p_k (Woodbury:
    a K x K system per batch instead of E x E)."""
    d = 1.0 + gamma * F  # (B, E)
    V = np.sqrt(w)[:, :, None] * p  # (B, K, E)
    K = V.shape[1]
    Vd = V / d[:, None, :]
    cap = np.eye(K) / gamma - np.einsum("bke,bje->bkj", Vd, V)
    rhs = np.einsum("bke,be->bk", Vd, r)
    y = np.linalg.solve(cap, rhs[..., None])[..., 0]
    return r / d + np.einsum("bke,bk->be", Vd, y)


def type_choices(
    quality: np.ndarray, weights: np.ndarray | None, beta: float, gamma: float
) -> np.ndarray:
    """Per-type routing probabilities p_ke (B, K, E) at the equilibrium."""
    q, w = as_batches(quality, weights)
    load = equilibrium(q, w, beta, gamma)
    return _softmax(beta * q - gamma * load[:, None, :])


def preferences_from_loads(loads: np.ndarray, gamma: float, floor: float = 1e-6) -> np.ndarray:
    """Invert a single-type equilibrium: the utilities u = beta*q (centred per row) that make
    `loads` (B, E) the equilibrium under `gamma`: u_e = log l_e + gamma*l_e - mean."""
    sh = np.clip(np.asarray(loads, dtype=float), floor, None)
    sh = sh / sh.sum(axis=-1, keepdims=True)
    u = np.log(sh) + gamma * sh
    return u - u.mean(axis=-1, keepdims=True)
