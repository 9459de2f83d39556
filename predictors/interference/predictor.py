"""`InterferencePredictor`: normalized performance (perf in (0, 1], 1 = no degradation) of a
window of black-box metrics, for any metric names, sampling rate or label source.

    p = InterferencePredictor(model="dual").fit(metrics, labels)
    p.predict(metrics)            # -> polars frame [window_id, perf]
    p.evaluate(metrics, labels)   # -> {"mae", "mae_pp", "rmse", "bias", "n", ...}

`metrics` is long (`window_id, t, metric, value`; see frames.py for masking rules); the unit
of prediction is the window (`unit = "window_id"`). `labels` (the `target`) is `window_id,
perf`, one row per window, plus optionally `validation` (bool: windows that only select the
epoch / tree count, in `fit`) and `group` (per-group scores, in `evaluate`). Models
(`MODELS`):

- `dual`: CloudFormer-style dual-branch Transformer (temporal + metric attention); with
  `skip=True` (default) plus a wide path on generic per-metric window statistics and a
  normalized target, so it learns the residual over persistence (see net.py); with a
  `target_metric`, the wide path starts as that metric's last-value forecast;
  `n_seeds > 1` trains that many copies from seeds seed, seed + 1, ... (each keeping its
  best validation epoch) and predicts their mean perf (a seed ensemble of the same model);
- `temporal`: the same network with the temporal branch only; with `pre_steps` > 0 its
  encoder (or the dual model's) first learns from every window of `fit`'s frame, labelled
  or not, by masked-counter reconstruction (`pretrain.pretrain_windows`, `pre_steps`
  optimizer steps), then trains as usual: the `temporal-pre` option of
  benchmarks/interference_ntua.py, saved and loaded like any temporal network;
- `across`: attention across the metrics at each step, then the temporal branch (net.py);
- `gbm`: LightGBM on per-metric window statistics;
- `last` / `moving_average`: the last value / mean of the last `ma_k` values of the
  `target_metric` (a metric carrying past perf), else the training mean of perf;
- `mean`: the training mean of perf.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError, UnknownNameError
from servecast.predictors.base import Predictor, read_json
from servecast.predictors.interference.frames import (
    Normalizer,
    Windows,
    clean_labels,
    clean_metrics,
    tensorize,
)
from servecast.predictors.interference.runtime import NEURAL, PERF_MIN, load_net
from servecast.predictors.metrics import error_scores

MODELS = ("dual", "temporal", "across", "gbm", "last", "moving_average", "mean")
#: the models whose step encoder `pre_steps` pretrains (`across` builds its step tokens
#: otherwise)
PRETRAINED = ("dual", "temporal")


class InterferencePredictor(Predictor):
    """Predict perf in (0, 1] of metric windows (kind `interference`)."""

    kind = "interference"
    unit = "window_id"

    def __init__(self, model: str = "dual", max_steps: int = 16, target_metric: str | None = None,
                 d_model: int = 64, heads: int = 4, layers: int = 2, dropout: float = 0.1,
                 skip: bool = True, epochs: int = 30, batch_size: int = 256, lr: float = 2e-3,
                 weight_decay: float = 1e-2, wide_l1: float = 1e-3, metric_dropout: float = 0.0,
                 val_frac: float = 0.15, ma_k: int = 4, gbm_trees: int = 600, seed: int = 0,
                 refit: bool = False, recent_weight: float = 1.0, n_seeds: int = 1,
                 train_steps: int = 0, pre_steps: int = 0, trainer_kw: dict | None = None):
        super().__init__()
        if model not in MODELS:
            raise UnknownNameError(f"unknown interference model {model!r}; one of "
                                   f"{', '.join(MODELS)}")
        if max_steps < 1:
            raise InvalidInputError(f"max_steps must be >= 1, got {max_steps}")
        if int(train_steps) < 0:
            raise InvalidInputError(f"train_steps must be >= 0 (0: use epochs), got {train_steps}")
        if int(pre_steps) < 0 or (int(pre_steps) and model not in PRETRAINED):
            raise InvalidInputError(f"pre_steps={pre_steps!r}: >= 0, and 0 unless the model is "
                                    f"one of {', '.join(PRETRAINED)} (got model {model!r})")
        if int(n_seeds) < 1:
            raise InvalidInputError(f"n_seeds must be >= 1, got {n_seeds}")
        self.model, self.max_steps, self.target_metric = model, int(max_steps), target_metric
        self.hp = dict(d_model=d_model, heads=heads, layers=layers, dropout=dropout,
                       skip=bool(skip), lr=lr, weight_decay=weight_decay, wide_l1=wide_l1,
                       metric_dropout=metric_dropout)
        self.epochs, self.batch_size, self.val_frac = epochs, batch_size, val_frac
        self.ma_k, self.gbm_trees, self.seed = ma_k, gbm_trees, seed
        self.refit, self.recent_weight = bool(refit), float(recent_weight)
        self.n_seeds, self.train_steps = int(n_seeds), int(train_steps)
        self.pre_steps = int(pre_steps)
        self.trainer_kw = trainer_kw or {}
        self.norm: Normalizer | None = None
        self.net = None
        self.gbm = None
        self.mean_perf = 1.0

    # -- data --------------------------------------------------------------------------------
    def _windows(self, df: pl.DataFrame, ids: list | None = None) -> Windows:
        return tensorize(df, self.norm, self.max_steps, ids)

    def _xy(self, df: pl.DataFrame, lab: pl.DataFrame) -> tuple[Windows, np.ndarray]:
        win = self._windows(df, lab["window_id"].to_list())
        return win, lab["perf"].to_numpy().astype(np.float32)

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, frame, target=None) -> InterferencePredictor:
        """Train on metrics `frame` and labels `target`. Validation (best-epoch selection, GBM
        early stop) uses the windows whose `validation` is true when the labels have that
        column, else the last `val_frac` of the labelled windows in label order (pass labels
        in time order). The normalizer is fitted on the training windows only."""
        if target is None:
            raise InvalidInputError("interference: fit(metrics, labels) needs the labels frame "
                                    "[window_id, perf] as `target`")
        df = clean_metrics(frame)
        labels = pl.DataFrame(target) if isinstance(target, dict) else target
        held = (labels["validation"].cast(pl.Boolean).fill_null(False).to_numpy()
                if "validation" in labels.columns else np.zeros(len(labels), bool))
        lab = clean_labels(labels, df["window_id"].unique())
        train_ids = lab.filter(pl.Series(~held))["window_id"]
        self.norm = Normalizer.fit(df.filter(pl.col("window_id").is_in(train_ids.implode())))
        win, y = self._xy(df, lab.filter(pl.Series(~held)))
        if held.any():
            vwin, vy = self._xy(df, lab.filter(pl.Series(held)))
            tr = (win.values, win.mask, y)
            va = (vwin.values, vwin.mask, vy)
        elif self.val_frac > 0 and len(y) >= 20:
            cut = int(round(len(y) * (1 - self.val_frac)))
            tr = (win.values[:cut], win.mask[:cut], y[:cut])
            va = (win.values[cut:], win.mask[cut:], y[cut:])
        else:
            tr, va = (win.values, win.mask, y), None
        refit = self.refit and va is not None
        if refit:  # train + val, val (the most recent windows) repeated recent_weight times
            rep = max(1, int(round(self.recent_weight)))
            full = tuple(np.concatenate([a] + [b] * rep) for a, b in zip(tr, va, strict=True))
        self.mean_perf = float(np.mean((full if refit else tr)[2]))
        log: dict = {}
        if self.model in NEURAL:
            from servecast.predictors.interference.lit import train_net

            hp = dict(self.hp, n_metrics=len(self.norm.metrics), max_steps=self.max_steps,
                      branches=self.model)
            anchor = None
            if self.hp["skip"] and self.target_metric in self.norm.metrics:
                k = self.norm.metrics.index(self.target_metric)
                anchor = (k, float(self.norm.center[k]), float(self.norm.scale[k]))
            epochs = self.epochs_for(len(tr[2]))
            trainer_kw = self.trainer_kw
            if self.pre_steps:  # every window of the frame, labelled or not (module doc)
                from servecast.predictors.interference.pretrain import pretrain_windows

                init, pre_log = pretrain_windows(df, self.norm, self.max_steps, self.hp,
                                                 self.pre_steps, self.batch_size, self.seed)
                trainer_kw = {**trainer_kw, "init": init}
            nets, logs = [], []
            for i in range(self.n_seeds):  # n_seeds > 1: a seed ensemble of the same network
                seed = self.seed + i
                net, lg = train_net(tr, va, hp, epochs, self.batch_size, seed,
                                    anchor=anchor, **trainer_kw)
                if refit and lg.get("best_epoch", -1) >= 0:
                    # validation picked the epoch count; retrain on train + val (the data
                    # closest to the test period) for that many epochs of the same schedule
                    stop = lg["best_epoch"] + 1
                    net, _ = train_net(full, None, hp, epochs, self.batch_size, seed,
                                       anchor=anchor, stop_epoch=stop, **trainer_kw)
                    lg = dict(lg, refit_epochs=stop)
                nets.append(net)
                logs.append(dict(lg, optimizer_steps=epochs * -(-len(tr[2]) // self.batch_size)))
            if self.n_seeds == 1:
                self.net, log = nets[0], logs[0]
            else:
                from servecast.predictors.interference.net import NetEnsemble

                self.net = NetEnsemble(nets).eval()
                log = dict(logs[0], seeds=logs)
        elif self.model == "gbm":
            from servecast.predictors.interference.baselines import GBMRegressor, window_stats

            self.gbm = GBMRegressor(n_estimators=self.gbm_trees, seed=self.seed).fit(
                window_stats(tr[0], tr[1]), tr[2],
                *((window_stats(va[0], va[1]), va[2]) if va is not None else (None, None)))
            if refit:  # same protocol: trees picked on val, then refit on train + val
                trees = self.gbm.booster.best_iteration or self.gbm.booster.num_trees()
                self.gbm = GBMRegressor(n_estimators=max(int(trees), 1), seed=self.seed).fit(
                    window_stats(full[0], full[1]), full[2])
                log = {"refit_trees": int(trees)}
        self.card.update({
            "model": self.model,
            "data": {"windows": len(y), "metrics": len(self.norm.metrics),
                     "observations": df.height, "unknown_metrics_at_fit": win.unknown_metrics},
            "split": {"train_windows": len(tr[2]), "val_windows": 0 if va is None else len(va[2])},
            "training": log,
        })
        if self.model in NEURAL and self.pre_steps:
            self.card["pretraining"] = pre_log
        return self

    def epochs_for(self, n_train: int) -> int:
        """Epochs of the networks' schedule: `epochs`, or with a `train_steps` budget (> 0)
        the fewest whole epochs of `batch_size` rows over `n_train` windows that make at
        least `train_steps` optimizer steps (the budget does not shrink with fewer windows)."""
        if self.train_steps <= 0:
            return self.epochs
        per_epoch = max(1, -(-n_train // self.batch_size))
        return max(1, -(-self.train_steps // per_epoch))

    # -- predict -----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.norm is not None

    def predict(self, metrics) -> pl.DataFrame:
        """Frame [window_id, perf] (perf in [0.001, 1]), one row per window, input order."""
        self.check_fitted()
        df = clean_metrics(metrics)
        ids = df["window_id"].unique(maintain_order=True).to_list()
        perf = self._predict(df, ids)
        return pl.DataFrame({"window_id": ids, "perf": np.clip(perf, PERF_MIN, 1.0)},
                            schema={"window_id": df.schema["window_id"], "perf": pl.Float64})

    def _predict(self, df: pl.DataFrame, ids: list) -> np.ndarray:
        if self.model in ("last", "moving_average", "mean"):
            return self._history(df, ids)
        win = self._windows(df, ids)
        if self.model in NEURAL:
            from servecast.predictors.interference.net import predict_net

            return predict_net(self.net, win.values, win.mask).astype(np.float64)
        from servecast.predictors.interference.baselines import window_stats

        return self.gbm.predict(window_stats(win.values, win.mask))

    def _history(self, df: pl.DataFrame, ids: list) -> np.ndarray:
        """Last value / moving average of the target metric; the training mean elsewhere."""
        if self.model == "mean" or not self.target_metric:
            return np.full(len(ids), self.mean_perf)
        from servecast.predictors.interference.baselines import target_history

        hist = target_history(df, self.target_metric, self.ma_k)
        col = "last" if self.model == "last" else "ma"
        frame = pl.DataFrame({"window_id": ids}, schema={"window_id": df.schema["window_id"]})
        out = frame.join(hist, on="window_id", how="left")[col].fill_null(self.mean_perf)
        return out.to_numpy().astype(np.float64)

    # -- evaluate ----------------------------------------------------------------------------
    def evaluate(self, metrics, target=None) -> dict:
        """MAE of perf (`mae`, and `mae_pp` in percentage points), RMSE, bias (mean of
        predicted - true), n, against the labels `target`; where the labels carry a `group`
        column, also per group (`by_group`)."""
        self.check_fitted()
        if target is None:
            raise InvalidInputError("interference: evaluate(metrics, labels) needs the labels "
                                    "frame [window_id, perf] as `target`")
        df = clean_metrics(metrics)
        labels = pl.DataFrame(target) if isinstance(target, dict) else target
        lab = clean_labels(labels, df["window_id"].unique())
        pred = self.predict(df).rename({"perf": "pred"})
        joined = lab.join(pred, on="window_id")
        out = scores(joined)
        if "group" in labels.columns:
            g = joined.join(labels.select("window_id", "group"), on="window_id")
            out["by_group"] = {str(k[0]): scores(part)
                               for k, part in g.group_by("group", maintain_order=True)}
        return out

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """`Predictor.save`, refused before anything is written when a constructor parameter
        has no JSON form (e.g. tensors in `trainer_kw`: pretrain with `pre_steps`)."""
        self.check_fitted()
        try:
            json.dumps(self.get_params())
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"interference: cannot save {path}: a parameter has no "
                                    f"JSON form ({e}); pass plain values (pre_steps for a "
                                    "pretrained encoder, not trainer_kw['init'])") from None
        return super().save(path)

    def _save(self, path: Path) -> None:
        state = {"norm": self.norm.to_dict(),
                 "mean_perf": self.mean_perf}
        (path / "interference.json").write_text(json.dumps(state))
        if self.net is not None:
            import torch

            torch.save(self.net.state_dict(), path / "net.pt")
        if self.gbm is not None:
            self.gbm.save(path / "gbm.txt")

    @classmethod
    def _load(cls, path: Path, card: dict) -> InterferencePredictor:
        state = read_json(path / "interference.json",
                          {"norm": dict, "mean_perf": (int, float)})
        cfg = card["params"]
        model = cls.from_params(path, cfg)
        model.norm = Normalizer.from_dict(state["norm"])
        model.mean_perf = float(state["mean_perf"])
        if model.model in NEURAL:
            model.net = load_net(path, cfg, len(model.norm.metrics))
        elif model.model == "gbm":
            from servecast.predictors.interference.baselines import GBMRegressor

            model.gbm = GBMRegressor.load(path / "gbm.txt")
        return model


def scores(joined: pl.DataFrame) -> dict:
    """MAE/RMSE/bias of `pred` against `perf` in a joined frame."""
    out = error_scores(joined["pred"].to_numpy(), joined["perf"].to_numpy())
    return {**out, "mae_pp": 100 * out["mae"]}
