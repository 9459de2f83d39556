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
from servecast.predictors.base import Predictor
from servecast.predictors.moe_congestion.equilibrium import as_batches, equilibrium
from servecast.predictors.moe_congestion.fitting import Fit, fit_layer, l1, normalize_loads

Layered = dict  # {layer: array}


def check_inputs(
    loads, quality, types=None, where: str = "input"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and shape one layer's arrays -> loads (B, E) shares, quality (B, K, E), w (B, K).

    loads: (E,) or (B, E) token counts or shares; quality: (E,), (B, E) or (B, K, E);
    types: None or type shares (B, K). Raises InvalidInputError naming the problem.
    """
    try:
        loads_arr = np.asarray(loads, dtype=float)
        q_arr = np.asarray(quality, dtype=float)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{where}: loads/quality must be numeric arrays ({e})") from None
    if loads_arr.ndim not in (1, 2) or loads_arr.shape[-1] < 2:
        raise InvalidInputError(
            f"{where}: loads must be (E,) or (batches, E) with E >= 2 experts, got shape "
            f"{loads_arr.shape}")
    if loads_arr.ndim == 1:
        loads_arr = loads_arr[None]
        if q_arr.ndim == 1:
            q_arr = q_arr[None]
        elif q_arr.ndim == 2 and types is not None:
            q_arr = q_arr[None]
    if not np.isfinite(loads_arr).all() or (loads_arr < 0).any():
        raise InvalidInputError(f"{where}: loads must be finite and >= 0 (token counts or shares)")
    if (loads_arr.sum(axis=1) <= 0).any():
        raise InvalidInputError(f"{where}: a batch has zero total load; drop empty batches")
    B, E = loads_arr.shape
    if q_arr.ndim == 2:
        q_arr = q_arr[:, None, :]
    if q_arr.ndim != 3 or q_arr.shape[0] != B or q_arr.shape[2] != E:
        raise InvalidInputError(
            f"{where}: quality shape {np.shape(quality)} does not match loads {np.shape(loads)}; "
            "expected (E,), (batches, E) or (batches, types, E)")
    if not np.isfinite(q_arr).all():
        raise InvalidInputError(f"{where}: quality has NaN/inf; fill missing types with 0 "
                                "and give them weight 0")
    K = q_arr.shape[1]
    if types is not None:
        w = np.asarray(types, dtype=float)
        if w.shape != (B, K) or not np.isfinite(w).all() or (w < 0).any():
            raise InvalidInputError(
                f"{where}: types must be type shares of shape (batches, types) = {(B, K)}, "
                f">= 0; got {w.shape}")
        if (w.sum(axis=1) <= 0).any():
            raise InvalidInputError(f"{where}: a batch has all type shares zero")
    elif K > 1:
        raise InvalidInputError(f"{where}: quality has {K} types; pass their shares as `types`")
    q, w = as_batches(q_arr, None if types is None else w)
    return normalize_loads(loads_arr), q, w


def _layered(x, layers: list) -> dict:
    if isinstance(x, dict):
        return x
    return {layers[0]: x} if x is not None else dict.fromkeys(layers)


class CongestionGame(Predictor):
    """Per-layer (beta, gamma_eff) of the routing logit equilibrium, with bootstrap CIs.

    fix_gamma: fit beta only with gamma fixed (0 = the temperature-softmax baseline).
    n_bootstrap: batch-bootstrap refits for the CIs (0 = none); ci: interval mass (0.9).
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
    def fit(self, loads, quality, types=None) -> CongestionGame:
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
        self.card.update({"fix_gamma": self.fix_gamma, "n_bootstrap": self.n_bootstrap,
                          "ci": self.ci, "metrics": {"train_l1": self.train_l1()}})
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
        if not self.fits:
            raise InvalidInputError("CongestionGame is not fitted; call fit(...) first")
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

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Protocol form: long frame [layer, batch, expert, quality, (type, weight)] ->
        frame [layer, batch, expert, load_pred] (shares)."""
        out = []
        for layer, q, w, batches in frame_to_arrays(frame, with_loads=False):
            pred = self.predict_loads(q, w, layer=layer)
            B, E = pred.shape
            out.append(pl.DataFrame({
                "layer": [layer] * (B * E), "batch": np.repeat(batches, E),
                "expert": np.tile(np.arange(E), B), "load_pred": pred.ravel()}))
        return pl.concat(out)

    def evaluate(self, loads, quality=None, types=None) -> dict:
        """Mean held-out L1 per layer {layer: l1} (+ 'mean'); arrays or dicts as in `fit`, or a
        long frame with a `load` column as the only argument."""
        if isinstance(loads, pl.DataFrame):
            items = [(lay, q, w, ld) for lay, q, w, _, ld in frame_to_arrays(loads, True)]
        else:
            layers = list(loads) if isinstance(loads, dict) else [next(iter(self.fits), 0)]
            ld, qd, td = (_layered(x, layers) for x in (loads, quality, types))
            items = []
            for layer in layers:
                ls, q, w = check_inputs(ld[layer], qd[layer], td.get(layer), f"layer {layer}")
                items.append((layer, q, w, ls))
        res = {}
        for layer, q, w, ls in items:
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
        data = {"fix_gamma": self.fix_gamma, "layers": [
            {"layer": layer, "beta": f.beta, "gamma": f.gamma, "l1": f.l1,
             "sizes": list(self.sizes[layer]), "ci": self.intervals.get(layer, {})}
            for layer, f in self.fits.items()]}
        (path / "params.json").write_text(json.dumps(data, indent=2, default=float))

    @classmethod
    def _load(cls, path: Path, card: dict) -> CongestionGame:
        data = json.loads((path / "params.json").read_text())
        game = cls(fix_gamma=data["fix_gamma"], n_bootstrap=card.get("n_bootstrap", 0))
        for row in data["layers"]:
            game.fits[row["layer"]] = Fit(row["beta"], row["gamma"], row["l1"])
            game.sizes[row["layer"]] = tuple(row["sizes"])
            game.intervals[row["layer"]] = row["ci"]
        return game


def frame_to_arrays(frame: pl.DataFrame, with_loads: bool):
    """Long frame [layer, batch, expert, quality, (type, weight), (load)] -> per layer
    (layer, quality (B, K, E), weights (B, K), batch ids, [loads (B, E)])."""
    need = {"layer", "batch", "expert", "quality"} | ({"load"} if with_loads else set())
    missing = need - set(frame.columns)
    if missing:
        raise InvalidInputError(f"frame lacks column(s) {sorted(missing)}; expected "
                                "layer, batch, expert, quality (+ type, weight; load)")
    if "type" not in frame.columns:
        frame = frame.with_columns(type=pl.lit(0), weight=pl.lit(1.0))
    for (layer,), part in frame.sort("layer").group_by("layer", maintain_order=True):
        batches = np.sort(part["batch"].unique().to_numpy())
        types = np.sort(part["type"].unique().to_numpy())
        E = int(part["expert"].max()) + 1
        bi = np.searchsorted(batches, part["batch"].to_numpy())
        ki = np.searchsorted(types, part["type"].to_numpy())
        ei = part["expert"].to_numpy()
        q = np.zeros((len(batches), len(types), E))
        q[bi, ki, ei] = part["quality"].to_numpy()
        w = np.zeros((len(batches), len(types)))
        w[bi, ki] = part["weight"].to_numpy()
        item = (layer, q, w, batches)
        if with_loads:
            ld = np.zeros((len(batches), E))
            ld[bi, ei] = part["load"].to_numpy()  # repeated per type: same value
            item = item + (ld,)
        yield item
