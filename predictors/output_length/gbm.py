"""Metadata model: LightGBM quantile boosting (p50, p90, p99) plus an L2 model for the mean.

Features (features.py): prompt tokens, model, log type, session turn / previous output /
prompt growth, prefix sharing with earlier requests (where `prefix_hashes` exist), hour and
weekday (traces spanning >= 2 days), and the prompt-length history (history.py: outputs of
earlier requests with the same prompt length, the same length bucket, any length).

Without history features the runtime serves the model from a LengthTable; with them (the
default) from the compiled trees (forest.py), since the history codes change per request.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from servecast.predictors.metrics import pinball
from servecast.predictors.output_length.core import OutputLengthModel
from servecast.predictors.output_length.features import ALL, CATEGORIES, CONTEXT
from servecast.predictors.output_length.forest import Forest
from servecast.predictors.output_length.history import LengthHistory
from servecast.predictors.output_length.runtime import from_heads
from servecast.predictors.output_length.table import LengthTable

HEADS = [("quantile", 0.5), ("quantile", 0.9), ("quantile", 0.99), ("regression", None)]


class MetadataModel(OutputLengthModel):
    """Quantile gradient boosting on request metadata.

    n_estimators / learning_rate / num_leaves / max_bin: LightGBM settings; `columns`
    restricts the features (e.g. ["prompt_tokens"] for a prompt-length-only model);
    `log_target`: the median head fits log1p(tokens) (quantiles commute with the monotone
    transform; the trees split the skewed outputs more evenly: better ranking), the p90/p99
    and mean heads tokens (their log fit over-covered on Azure conversation). Each
    head falls back to segment-only features (a per-segment quantile, the baseline) where that
    scores better on the held-out calibration rows.
    """

    name = "metadata"
    refit = True

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05,
                 num_leaves: int = 31, min_child_samples: int = 20, max_bin: int = 1023,
                 columns: list[str] | None = None, threads: int = 1, seed: int = 0,
                 segment_heads: list[bool] | None = None, log_target: bool = True, **kw):
        super().__init__(**kw)
        self.params = dict(n_estimators=n_estimators, learning_rate=learning_rate,
                           num_leaves=num_leaves, min_child_samples=min_child_samples,
                           max_bin=max_bin, columns=columns, threads=threads, seed=seed,
                           log_target=log_target)
        self.boosters: list = []
        # per head: True where the held-out calibration rows (the later-in-time tail of the
        # training data) preferred a model of the segment (model x log type) alone over the
        # full feature set, i.e. the features carried no signal; the refit on all rows keeps it
        self.segment_heads: list[bool] | None = segment_heads
        self.seen_contexts: list[tuple[int, int, int]] = [(0, 0, 0)]


    def _fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> None:

        p = self.params
        if p["columns"]:
            unknown = set(p["columns"]) - set(ALL)
            if unknown:
                raise ValueError(f"unknown feature(s) {sorted(unknown)}; known: {ALL}")
            self.encoder.columns = [c for c in self.encoder.columns if c in p["columns"]]
        self.encoder.prefix_index = {}
        self.encoder.history = LengthHistory()
        X = self.encoder.transform(train, learn=True)
        cols = [self.encoder.columns.index(c) if c in self.encoder.columns else None
                for c in CONTEXT]
        ctx = np.column_stack([X[:, j] if j is not None else np.zeros(len(X)) for j in cols])
        self.seen_contexts = [tuple(int(v) for v in r) for r in np.unique(ctx, axis=0)]
        y = train["output_tokens"].to_numpy().astype(np.float64)
        ly = np.log1p(y) if p["log_target"] else y  # target of the median head
        big = len(y) > 300_000  # bag rows on big traces to keep training time bounded
        self.boosters = []
        seg_only = X.copy()  # same columns; everything but model / log type held constant
        seg_only[:, [j for j, c in enumerate(self.encoder.columns) if c not in CATEGORIES]] = 0
        if valid is not None and valid.height >= 50:
            Xv = self.encoder.transform(valid)
            yv = valid["output_tokens"].to_numpy().astype(np.float64)
            self.segment_heads = []
        else:
            valid = None
        self._datasets: dict = {}
        for h, (objective, alpha) in enumerate(HEADS):
            params = {
                "objective": objective, "learning_rate": p["learning_rate"],
                "num_leaves": p["num_leaves"], "min_data_in_leaf": p["min_child_samples"],
                "max_bin": p["max_bin"], "num_threads": p["threads"], "seed": p["seed"],
                "deterministic": True, "verbose": -1,
                **({"alpha": alpha} if alpha else {}),
                **({"bagging_fraction": 0.3, "bagging_freq": 1} if big else {}),
            }
            # the segment-only model is the per-segment quantile (mean) baseline: one tree
            # at learning rate 1, whose leaves LightGBM sets to the residual quantiles
            seg_params = {**params, "learning_rate": 1.0}
            target = ly if alpha == 0.5 else y
            if valid is not None:
                full = self._train(params, X, target)
                seg = self._train(seg_params, seg_only, target, rounds=1)
                use_seg = self._loss(seg, Xv, yv, alpha) <= self._loss(full, Xv, yv, alpha)
                self.segment_heads.append(bool(use_seg))
                self.boosters.append(seg if use_seg else full)
            else:
                use_seg = bool(self.segment_heads and self.segment_heads[h])
                self.boosters.append(self._train(seg_params, seg_only, target, rounds=1)
                                     if use_seg else self._train(params, X, target))
        self._datasets = {}

    def _train(self, params: dict, X: np.ndarray, y: np.ndarray, rounds: int | None = None):
        """One head on features `X`; the binned Dataset is built once per matrix and shared
        by the heads (binning 1M rows is a few seconds each time)."""
        import lightgbm as lgb

        ds = self._datasets.get((id(X), id(y)))
        if ds is None:
            ds = lgb.Dataset(X, y, feature_name=self.encoder.columns, free_raw_data=False,
                             params={"max_bin": params["max_bin"], "verbose": -1})
            self._datasets[(id(X), id(y))] = ds
        return lgb.train(params, ds, num_boost_round=rounds or self.params["n_estimators"])

    def _loss(self, booster, X: np.ndarray, y: np.ndarray, alpha: float | None) -> float:
        """Held-out loss of one head: pinball at `alpha`, squared error for the mean head."""
        q = booster.predict(X, num_threads=self.params["threads"])
        if alpha == 0.5 and self.params["log_target"]:
            q = np.expm1(q)
        return pinball(q, y, alpha) if alpha else float(np.mean((y - q) ** 2))

    def _raw_X(self, X: np.ndarray) -> np.ndarray:
        out = np.column_stack([b.predict(X, num_threads=self.params["threads"])
                               for b in self.boosters])
        return from_heads(out, self.params["log_target"])

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        return self._raw_X(self.encoder.transform(df))

    # -- runtime table ---------------------------------------------------------------------
    def prompt_edges(self) -> np.ndarray:
        """Every split threshold on prompt_tokens used by any tree (tokens)."""
        j = self.encoder.columns.index("prompt_tokens")
        edges: set[float] = set()
        for b in self.boosters:
            for tree in b.dump_model()["tree_info"]:
                stack = [tree["tree_structure"]]
                while stack:
                    node = stack.pop()
                    if "split_feature" in node:
                        if node["split_feature"] == j:
                            edges.add(float(node["threshold"]))
                        stack += [node["left_child"], node["right_child"]]
        return np.array(sorted(edges))

    def contexts(self) -> list[tuple[int, int, int]]:
        """Session context codes the table covers: (0, 0, 0) plus every combination seen in
        training (the runtime evaluates unseen ones with the boosters and caches them)."""
        return sorted({(0, 0, 0), *self.seen_contexts})

    def table(self) -> LengthTable | None:
        if self.encoder.use_history:
            return None  # the history codes are per request: served by the forest
        cats = self.encoder.categories
        return LengthTable.build(self.encoder.columns, len(cats["model"]), len(cats["log_type"]),
                                 self.prompt_edges(), self.contexts(), self._raw_X)

    def _save_weights(self, path: Path) -> None:
        for i, b in enumerate(self.boosters):
            b.save_model(str(path / f"head{i}.txt"))
        if self.encoder.use_history:
            log = self.params["log_target"]
            Forest.from_boosters(self.boosters, len(self.encoder.columns),
                                 [a == 0.5 and log for _, a in HEADS]).save(path)
        (path / "contexts.json").write_text(json.dumps(self.seen_contexts))
        (path / "segment_heads.json").write_text(json.dumps(self.segment_heads))

    def _load_weights(self, path: Path, card: dict) -> None:
        import lightgbm as lgb

        self.boosters = [lgb.Booster(model_file=str(path / f"head{i}.txt"))
                         for i in range(len(HEADS))]
        self.seen_contexts = [tuple(c) for c in json.loads((path / "contexts.json").read_text())]
        self.segment_heads = json.loads((path / "segment_heads.json").read_text())
