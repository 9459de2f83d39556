"""`CongestionGame`: the effective congestion coefficient gamma_eff of MoE routing.

Operationalization (ours; the "Three Phases of Expert Routing" code is not public):

* A batch b of tokens is routed at one layer over E experts. Tokens fall into K types
  (K = 1: a single type; K > 1: types from k-means on router logits or hidden states), type k
  holding a share w_bk of the batch. q_bke is the quality of expert e for type k (e.g. minus
  the LM loss with the tokens forced to expert e, in nats; any estimator works, units are
  absorbed by beta).
* Observed loads l_be are the shares of routing assignments each expert receives (counts /
  total; top-k routing counts every assignment).
* Routing is a logit (quantal-response) equilibrium of a congestion game: a token of type k
  prefers expert e with utility beta*q_ke - gamma*l_e, where the congestion cost grows linearly
  with the expert's load share, and

      l_e = sum_k w_k softmax_e(beta*q_ke - gamma*l_e),

  solved by damped (Newton-preconditioned) fixed-point iteration (`equilibrium.py`).
* `fit` estimates (beta, gamma) per layer by minimizing the mean L1 between equilibrium and
  observed loads over the training batches. gamma = gamma_eff, in units of utility per unit of
  load share. gamma = 0 is the temperature-softmax baseline (`fix_gamma=0`).
* Confidence intervals: percentile bootstrap over batches (resample batches, refit).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.frames import to_polars
from servecast.predictors.base import Predictor
from servecast.predictors.moe_congestion.equilibrium import as_batches, equilibrium
from servecast.predictors.moe_congestion.fitting import Fit, fit_layer, l1, normalize_loads
from servecast.predictors.moe_congestion.inputs import (
    check_inputs,
    frame_arrays,
    predicted_loads,
)

Layered = dict  # {layer: array}


def _layered(x, layers: list) -> dict:
    if isinstance(x, dict):
        return x
    return {layers[0]: x} if x is not None else dict.fromkeys(layers)


class CongestionGame(Predictor):
    """Per-layer (beta, gamma_eff) of the routing logit equilibrium, with bootstrap CIs.

    fix_gamma: fit beta only with gamma fixed (0 = the temperature-softmax baseline).
    n_bootstrap: batch-bootstrap refits for the CIs (0 = none); ci: interval mass (0.9).

    Contract form: `fit(frame)` / `evaluate(frame)` on a long frame [layer, batch, expert,
    quality, (type, weight), load] (the target is the `load` column: token counts or shares
    per batch and expert); `predict(frame)` -> one `load_pred` share per input row. The array
    forms `fit_arrays` / `evaluate_arrays` take one layer's arrays or {layer: array} dicts.
    """

    kind = "moe_congestion"

    def __init__(self, fix_gamma: float | None = None, n_bootstrap: int = 50, ci: float = 0.9,
                 seed: int = 0, gamma_max: float = 1000.0):
        super().__init__()
        self.fix_gamma, self.n_bootstrap, self.ci = fix_gamma, n_bootstrap, ci
        self.seed, self.gamma_max = seed, gamma_max
        self.fits: dict = {}  # layer -> Fit
        self.intervals: dict = {}  # layer -> dict(beta_lo, beta_hi, gamma_lo, gamma_hi)
        self.sizes: dict = {}  # layer -> (batches, types, experts)

    # -- fitting ---------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return bool(self.fits)

    def fit(self, frame, target=None) -> CongestionGame:
        """Fit each layer of the long frame (target: its `load` column). Returns self."""
        loads, quality, types = _frame_layers(frame, target)
        return self.fit_arrays(loads, quality, types)

    def fit_arrays(self, loads, quality, types=None) -> CongestionGame:
        """Fit each layer. Arguments are one layer's arrays (see `check_inputs`) or dicts
        {layer: array} with the same keys. Returns self."""
        layers = list(loads) if isinstance(loads, dict) else [0]
        qd, td = _layered(quality, layers), _layered(types, layers)
        if set(qd) != set(layers):
            raise InvalidInputError("loads and quality must have the same layers")
        for layer in layers:
            ls, q, w = check_inputs(loads[layer] if isinstance(loads, dict) else loads,
                                    qd[layer], td.get(layer), where=f"layer {layer}")
            fit = fit_layer(ls, q, w, self.fix_gamma, gamma_max=self.gamma_max)
            self.fits[layer] = fit
            self.sizes[layer] = (ls.shape[0], q.shape[1], ls.shape[1])
            self.intervals[layer] = self._bootstrap(ls, q, w, fit)
        self.card.update({"metrics": {"train_l1": self.train_l1()}})
        return self

    def _bootstrap(self, loads, q, w, fit: Fit) -> dict:
        B = loads.shape[0]
        if self.n_bootstrap <= 0 or B < 3:
            return {}
        rng = np.random.default_rng(self.seed)
        draws = []
        for _ in range(self.n_bootstrap):
            idx = rng.integers(0, B, B)
            f = fit_layer(loads[idx], q[idx], w[idx], self.fix_gamma, start=fit,
                          gamma_max=self.gamma_max)
            draws.append((f.beta, f.gamma))
        d = np.array(draws)
        a = (1 - self.ci) / 2
        lo, hi = np.quantile(d, [a, 1 - a], axis=0)
        return {"beta_lo": lo[0], "beta_hi": hi[0], "gamma_lo": lo[1], "gamma_hi": hi[1],
                "gamma_se": float(d[:, 1].std(ddof=1))}

    # -- prediction ------------------------------------------------------------------------
    def _fit_of(self, layer) -> Fit:
        self.check_fitted()
        if layer is None:
            if len(self.fits) > 1:
                raise InvalidInputError(f"several layers fitted ({list(self.fits)}); pass layer=")
            layer = next(iter(self.fits))
        if layer not in self.fits:
            raise InvalidInputError(f"layer {layer!r} not fitted (fitted: {list(self.fits)})")
        return self.fits[layer]

    def predict_loads(self, quality, types=None, layer=None) -> np.ndarray:
        """Equilibrium load shares (B, E) for quality (E,)/(B, E)/(B, K, E) at `layer`."""
        fit = self._fit_of(layer)
        q = np.asarray(quality, dtype=float)
        if q.ndim == 2 and types is not None and np.ndim(types) == 1:
            q = q[None]
        q, w = as_batches(q, None if types is None else np.atleast_2d(types))
        return equilibrium(q, w, fit.beta, fit.gamma)

    def predict(self, frame) -> pl.DataFrame:
        """Long frame [layer, batch, expert, quality, (type, weight)] -> frame [load_pred]:
        the equilibrium load share of each row's (layer, batch, expert), row-aligned."""
        self.check_fitted()
        frame = to_polars(frame)
        cols = {c: frame[c].to_numpy() for c in frame.columns}
        return pl.DataFrame({"load_pred": predicted_loads(
            cols, lambda layer: (self._fit_of(layer).beta, self._fit_of(layer).gamma))})

    def evaluate(self, frame, target=None) -> dict:
        """Mean held-out L1 per layer {layer: l1} (+ 'mean') of the long frame (target: its
        `load` column)."""
        return self.evaluate_arrays(*_frame_layers(frame, target))

    def evaluate_arrays(self, loads, quality=None, types=None) -> dict:
        """`evaluate` on arrays or {layer: array} dicts as in `fit_arrays`."""
        self.check_fitted()
        layers = list(loads) if isinstance(loads, dict) else [next(iter(self.fits), 0)]
        ld, qd, td = (_layered(x, layers) for x in (loads, quality, types))
        res = {}
        for layer in layers:
            ls, q, w = check_inputs(ld[layer], qd[layer], td.get(layer), f"layer {layer}")
            pred = self.predict_loads(q, w, layer=layer)
            res[layer] = float(l1(pred, normalize_loads(ls)).mean())
        res["mean"] = float(np.mean(list(res.values())))
        return res

    def train_l1(self) -> float:
        """Mean training L1 over layers."""
        return float(np.mean([f.l1 for f in self.fits.values()]))

    @property
    def params(self) -> pl.DataFrame:
        """One row per layer: beta, gamma (= gamma_eff) with bootstrap CI, train L1, sizes."""
        rows = []
        for layer, f in self.fits.items():
            ci = self.intervals.get(layer, {})
            b, k, e = self.sizes[layer]
            rows.append({"layer": str(layer), "beta": f.beta, "gamma": f.gamma,
                         "gamma_lo": ci.get("gamma_lo"), "gamma_hi": ci.get("gamma_hi"),
                         "beta_lo": ci.get("beta_lo"), "beta_hi": ci.get("beta_hi"),
                         "train_l1": f.l1, "batches": b, "types": k, "experts": e})
        return pl.DataFrame(rows, schema_overrides={c: pl.Float64 for c in (
            "gamma_lo", "gamma_hi", "beta_lo", "beta_hi")})

    # -- persistence -----------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        data = {"layers": [
            {"layer": layer, "beta": f.beta, "gamma": f.gamma, "l1": f.l1,
             "sizes": list(self.sizes[layer]), "ci": self.intervals.get(layer, {})}
            for layer, f in self.fits.items()]}
        (path / "params.json").write_text(json.dumps(data, indent=2, default=float))

    @classmethod
    def _load(cls, path: Path, card: dict) -> CongestionGame:
        data = json.loads((path / "params.json").read_text())
        game = cls.from_params(path, card["params"])
        for row in data["layers"]:
            game.fits[row["layer"]] = Fit(row["beta"], row["gamma"], row["l1"])
            game.sizes[row["layer"]] = tuple(row["sizes"])
            game.intervals[row["layer"]] = row["ci"]
        return game


def _frame_layers(frame, target) -> tuple[dict, dict, dict]:
    """{layer: loads}, {layer: quality}, {layer: type shares} of a long frame with a `load`
    column (`target` must be None)."""
    if target is not None:
        raise InvalidInputError("moe_congestion: the target is the frame's load column; pass "
                                "target=None")
    frame = to_polars(frame)
    loads, quality, types = {}, {}, {}
    for layer, q, w, _, ld in frame_arrays({c: frame[c].to_numpy() for c in frame.columns},
                                           with_loads=True):
        loads[layer], quality[layer], types[layer] = ld, q, w
    return loads, quality, types
