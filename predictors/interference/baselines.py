"""Baselines beside the transformer: last value / moving average of the target, and gradient
boosting on window statistics. All work on the dense arrays of `frames.tensorize`."""

from __future__ import annotations

import numpy as np
import polars as pl

from servecast.predictors.interference.windows import window_stats

STATS = ("last", "mean", "std", "min", "max", "slope", "count")
__all__ = ["GBMRegressor", "STATS", "target_history", "window_stats"]


def target_history(metrics: pl.DataFrame, target: str, k: int) -> pl.DataFrame:
    """window_id, last, ma: the last value and the mean of the last `k` finite values of
    metric `target` in each window (windows without it are absent)."""
    return (metrics.filter((pl.col("metric") == target) & pl.col("value").is_not_null())
            .sort("window_id", "t")
            .group_by("window_id", maintain_order=True)
            .agg(pl.col("value").last().alias("last"), pl.col("value").tail(k).mean().alias("ma")))


class GBMRegressor:
    """LightGBM on window statistics; output clipped to (0, 1]."""

    def __init__(self, n_estimators: int = 400, learning_rate: float = 0.05,
                 num_leaves: int = 31, seed: int = 0):
        self.rounds = n_estimators
        self.params = dict(learning_rate=learning_rate, num_leaves=num_leaves, seed=seed,
                           min_data_in_leaf=20, bagging_fraction=0.8, bagging_freq=1,
                           feature_fraction=0.5, objective="l1", verbose=-1, num_threads=1)
        self.booster = None

    def fit(self, x: np.ndarray, y: np.ndarray, x_val=None, y_val=None) -> GBMRegressor:
        """Boost up to `n_estimators` rounds; with a validation set, stop 50 rounds after
        its L1 last improved."""
        import lightgbm as lgb

        train = lgb.Dataset(x, y, params=self.params)
        kw = {}
        if x_val is not None:
            kw = dict(valid_sets=[train.create_valid(x_val, y_val)],
                      callbacks=[lgb.early_stopping(50, verbose=False)])
        self.booster = lgb.train(self.params, train, num_boost_round=self.rounds, **kw)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        best = self.booster.best_iteration or None
        return self.booster.predict(x, num_iteration=best)

    def save(self, path) -> None:
        self.booster.save_model(str(path))

    @classmethod
    def load(cls, path) -> GBMRegressor:
        import lightgbm as lgb

        g = cls()
        g.booster = lgb.Booster(model_file=str(path))
        return g
