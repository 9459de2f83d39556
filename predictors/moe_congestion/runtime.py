"""Light runtime behind `Estimator.moe_congestion` (numpy + scipy; no DuckDB, no Lightning).

A saved `CongestionGame` fixes the inverse temperature beta (per layer; the median over
layers by default). Given a new routing snapshot's expert loads and quality (in the same
units the model was fitted on, e.g. -loss in nats), `moe_congestion` returns gamma_eff: the
congestion coefficient whose logit equilibrium best matches the loads (1-D L1 fit).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from servecast.errors import InvalidInputError, ModelVersionError
from servecast.predictors.base import read_card, read_json
from servecast.predictors.moe_congestion.fitting import fit_gamma_given_beta
from servecast.predictors.moe_congestion.inputs import check_inputs, predicted_loads


class Runtime:
    """gamma_eff estimates from a saved `moe_congestion` model directory."""

    kind = "moe_congestion"

    def __init__(self, betas: dict[str, float], card: dict,
                 gammas: dict[str, float] | None = None):
        self.betas, self.card = betas, card
        self.gammas = gammas or {}

    @classmethod
    def load(cls, path: str | Path) -> Runtime:
        path = Path(path)
        card = read_card(path, "moe_congestion")
        params = path / "params.json"
        if not params.is_file():
            raise ModelVersionError(f"{path}: params.json missing; re-save the model")
        data = read_json(params, {"layers": list})
        rows = data["layers"]
        if not all(isinstance(r, dict) and isinstance(r.get("beta"), (int, float))
                   and not isinstance(r.get("beta"), bool) and "layer" in r for r in rows):
            raise ModelVersionError(f"{params}: 'layers' must hold objects with 'layer' and a "
                                    "numeric 'beta'; re-save the model")
        betas = {str(r["layer"]): float(r["beta"]) for r in rows}
        if not betas:
            raise ModelVersionError(f"{path}: model has no fitted layer")
        return cls(betas, card, {str(r["layer"]): float(r["gamma"]) for r in data["layers"]})

    def beta(self, layer=None) -> float:
        """Inverse temperature of `layer` (None: median over the fitted layers)."""
        if layer is None:
            return float(np.median(list(self.betas.values())))
        if str(layer) not in self.betas:
            raise InvalidInputError(f"layer {layer!r} not in the model (has {list(self.betas)})")
        return self.betas[str(layer)]

    def moe_congestion(self, loads, quality, types=None, layer=None) -> float:
        """gamma_eff (utility per unit load share, >= 0) for loads (E,) or (B, E) token counts
        or shares and quality (E,), (B, E) or (B, K, E) with type shares `types` (B, K)."""
        shares, q, w = check_inputs(loads, quality, types, where="moe_congestion")
        return fit_gamma_given_beta(shares, q, w, self.beta(layer)).gamma

    def predict(self, frame) -> dict[str, np.ndarray]:
        """The predictor's `predict` without polars: long frame [layer, batch, expert, quality,
        (type, weight)] -> {"load_pred": equilibrium load share per row} under each layer's
        fitted (beta, gamma)."""
        cols = {c: np.asarray(frame[c]) for c in
                (frame.keys() if isinstance(frame, Mapping) else frame.columns)}
        return {"load_pred": predicted_loads(cols, self._layer_params)}

    def _layer_params(self, layer) -> tuple[float, float]:
        if str(layer) not in self.gammas:
            raise InvalidInputError(f"layer {layer!r} not in the model (has {list(self.betas)})")
        return self.betas[str(layer)], self.gammas[str(layer)]

    def moe_congestion_batch(self, items) -> list[float]:
        """gamma_eff for each (loads, quality) or (loads, quality, types) item."""
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise InvalidInputError(f"item {i}: expected (loads, quality[, types])")
            out.append(self.moe_congestion(*item))
        return out
