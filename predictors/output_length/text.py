"""Text model: prompt sentence embedding + session metadata -> LightGBM quantile heads.

Inputs: the 384-d MiniLM embedding of `prompt_text` (embeddings.py; with `finetune_epochs`
> 0, by a copy of MiniLM first fine-tuned to output length on the training rows, finetune.py,
and saved with the model), reduced by PCA fitted on the training rows only (`n_components`,
default 64); the metadata columns META (prompt tokens, session turn, previous-output and
prompt-growth buckets); the outputs of the nearest training prompts and the request's wording
(text_features.py); the outputs of the earlier turns of its conversation, weighted by prompt
similarity (conversation.py); with `lexical` (default), the prediction of a TF-IDF + ridge
regressor over the whole prompt and the previous turn's output (tfidf.py; out-of-fold by
conversation on the training rows) and the outputs of the training prompts nearest in TF-IDF
space (text_features.LexicalIndex). Heads: LightGBM quantile boosting at 0.5 / 0.9 / 0.99 on
log1p(tokens) (quantiles are invariant under the monotone transform; the log scale keeps leaf
values stable on the heavy tail) and an L2 head for the mean on tokens; the median is the mean
of `bag` (default 3) seeded median heads on the log scale (the ranking a scheduler orders by
varies less between seeds). Non-crossing is enforced at prediction (cumulative max).

Gradient boosting replaced an earlier Lightning MLP head: on ShareGPT (seeded split by
conversation, several seeds) it scores a higher Kendall tau and lower MAE at every training
size tried, trains in seconds, and needs no tuning loop. Hyperparameters are fixed defaults,
chosen on a validation split inside the training rows (docs/results.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError, ModelVersionError
from servecast.predictors.base import read_json
from servecast.predictors.output_length.conversation import MEMORY, memory_features
from servecast.predictors.output_length.core import OutputLengthModel
from servecast.predictors.output_length.embeddings import (
    DIM,
    TUNED_FILE,
    embed,
    encoder,
    load_encoder,
    save_tuned,
)
from servecast.predictors.output_length.text_features import (
    LEXICAL_FILE,
    NAMES,
    NEIGHBOUR,
    LexicalIndex,
    NeighbourIndex,
    wording,
)
from servecast.predictors.output_length.tfidf import FILE as RIDGE_FILE
from servecast.predictors.output_length.tfidf import TextRidge, numeric, out_of_fold

META = ["prompt_tokens", "turn_b", "prev_out_b", "growth_b"]
#: after the `bag` median heads (quantile 0.5, seeds seed .. seed + bag - 1)
HEADS = [("quantile", 0.9), ("quantile", 0.99), ("regression", None)]
#: saved-weights format (1: the former MLP head; 2: without neighbours / wording; 3: without
#: conversation memory; 4: without the lexical ridge feature; 5: one median head, without the
#: lexical neighbours and the wider neighbour summaries)
FORMAT = 6


def project(E: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """PCA scores of embeddings `E` (n, DIM) -> (n, k)."""
    return (np.asarray(E, np.float64) - mean) @ components.T


def metadata(encoder, df: pl.DataFrame, E: np.ndarray) -> np.ndarray:
    """Head block `M` of `design`: the META codes of `df` by the fitted feature `encoder` and
    the conversation memory of its rows (unit embeddings `E`, aligned)."""
    encoder.columns = list(META)
    return np.hstack([encoder.transform(df), memory_features(df, E)])


def ridge_inputs(M: np.ndarray) -> np.ndarray:
    """The ridge's numeric columns (tfidf.numeric) from a metadata block `M` (`metadata`)."""
    return numeric(M[:, META.index("prompt_tokens")], M[:, len(META) + MEMORY.index(
        "conv_prev_lout")])


def design(E: np.ndarray, M: np.ndarray, texts: list[str], pca: tuple[np.ndarray, np.ndarray],
           index: NeighbourIndex, groups: np.ndarray | None = None,
           ridge: TextRidge | None = None, lexical: np.ndarray | None = None,
           lexicon: LexicalIndex | None = None) -> np.ndarray:
    """Head inputs: PCA scores, metadata and conversation memory `M`, neighbour features
    (`groups`: leave-group-out on the training rows), wording features of `texts` and, with
    a `ridge`, its prediction (`lexical`: given instead, the training rows' out-of-fold one)
    and the neighbour features of the TF-IDF rows in `lexicon`."""
    parts = [project(E, *pca), M, index.features(E, groups), wording(texts)]
    if ridge is not None:
        parts.append((ridge.predict(texts, ridge_inputs(M)) if lexical is None
                      else lexical)[:, None])
        if lexicon is not None:
            parts.append(lexicon.features(ridge.tfidf(texts), groups))
    return np.hstack(parts)


def head_outputs(boosters: list, X: np.ndarray, threads: int = 1) -> np.ndarray:
    """Raw (n, 4) tokens (p50, p90, p99 non-decreasing; mean) from the heads: the median
    heads (all but the last len(HEADS)) averaged on log1p(tokens), then HEADS."""
    out = np.column_stack([b.predict(X, num_threads=threads) for b in boosters])
    bag = out.shape[1] - len(HEADS)
    logq = np.column_stack([out[:, :bag].mean(axis=1), out[:, bag:bag + 2]])
    q = np.maximum.accumulate(np.expm1(logq).clip(0), axis=1)
    return np.column_stack([q, out[:, -1].clip(0)])


def load_heads(path: Path) -> tuple[list, tuple[np.ndarray, np.ndarray], NeighbourIndex,
                                    TextRidge | None, LexicalIndex | None]:
    """Boosters, PCA (mean, components), neighbour index, lexical ridge and lexical
    neighbours (None: trained without) of a saved text model; clear error otherwise."""
    import lightgbm as lgb

    meta = read_json(path / "text.json") if (path / "text.json").is_file() else {}
    if meta.get("format") != FORMAT or not (path / "pca.npz").is_file():
        raise ModelVersionError(
            f"{path}: text model saved by another servecast version (weights format "
            f"{meta.get('format', 1)}, this version reads {FORMAT}); retrain it")
    boosters = [lgb.Booster(model_file=str(path / f"text_head{i}.txt"))
                for i in range(meta["heads"])]
    with np.load(path / "pca.npz") as z:
        pca = (z["mean"], z["components"])
    ridge = TextRidge.load(path) if (path / RIDGE_FILE).is_file() else None
    lexicon = LexicalIndex.load(path) if (path / LEXICAL_FILE).is_file() else None
    return boosters, pca, NeighbourIndex.load(path), ridge, lexicon


def tuned_encoder(path: Path):
    """The fine-tuned encoder saved with a text model, None where it has none."""
    return load_encoder(tuned=path) if (path / TUNED_FILE).is_file() else None


def text_encoder(path: Path):
    """The sentence encoder a saved text model embeds with: its fine-tuned one, else the
    shared pretrained one."""
    tuned = tuned_encoder(path)
    return encoder() if tuned is None else tuned


class TextModel(OutputLengthModel):
    """Embedding (PCA) + metadata quantile boosting; needs `prompt_text` in fit and predict."""

    name = "text"
    table_capable = False
    refit = True  # cheap: the embeddings are cached, the heads train in seconds

    def __init__(self, n_components: int = 64, n_estimators: int = 600,
                 learning_rate: float = 0.03, num_leaves: int = 31,
                 min_child_samples: int = 50, feature_fraction: float = 0.5,
                 threads: int = 1, seed: int = 0, cache: str | None = None,
                 finetune_epochs: int = 0, lexical: bool = True, bag: int = 3, **kw):
        super().__init__(**kw)
        self.params = dict(n_components=n_components, n_estimators=n_estimators,
                           learning_rate=learning_rate, num_leaves=num_leaves,
                           min_child_samples=min_child_samples,
                           feature_fraction=feature_fraction, threads=threads, seed=seed,
                           cache=cache, finetune_epochs=finetune_epochs, lexical=lexical,
                           bag=bag)
        self.tuned = None  # the encoder fine-tuned by the last fit (finetune_epochs > 0)
        # prompt -> its tuned embedding, kept while `fit` runs (the refit reuses them)
        self._tuned_memo: dict[str, np.ndarray] | None = None
        self.boosters: list = []
        self.pca = (np.zeros(DIM), np.zeros((0, DIM)))  # (mean, components)
        self.index = NeighbourIndex(np.zeros((0, DIM)), np.zeros(0))
        self.ridge: TextRidge | None = None
        self.lexicon: LexicalIndex | None = None

    def fit(self, frame) -> TextModel:
        """Fit; with `finetune_epochs` > 0 the encoder is tuned once per call (the refit on all
        rows reuses it and its embeddings)."""
        self.tuned, self._tuned_memo = None, {}
        try:
            return super().fit(frame)
        finally:
            self._tuned_memo = None

    @staticmethod
    def _check_text(df: pl.DataFrame) -> None:
        if "prompt_text" not in df.columns or df["prompt_text"].null_count():
            i = (int(df["prompt_text"].is_null().arg_max()) if "prompt_text" in df.columns
                 else 0)
            raise InvalidInputError(
                f"row {i}: no prompt_text; the text model needs the prompt text (use the "
                "metadata model for requests without text)")

    def _parts(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (n, DIM), metadata and conversation memory (n, len(META + MEMORY)))."""
        self._check_text(df)
        E = self._embed(df["prompt_text"].to_list())
        return E, metadata(self.encoder, df, E)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit embeddings (n, DIM) by the fine-tuned encoder where this fit made one."""
        if self.tuned is None:
            cache = Path(self.params["cache"]) if self.params["cache"] else None
            return embed(texts, cache=cache)
        # each distinct prompt is embedded once (per fit: the refit reuses the memo)
        memo = {} if self._tuned_memo is None else self._tuned_memo
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        if todo:
            memo.update(zip(todo, embed(todo, model=self.tuned), strict=True))
        return np.stack([memo[t] for t in texts])

    def _fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> None:
        import lightgbm as lgb

        p = self.params
        if p["finetune_epochs"] and self.tuned is None:  # once per fit: the refit keeps it
            from servecast.predictors.output_length.finetune import finetune

            self._check_text(train)
            self.tuned = load_encoder()
            finetune(self.tuned, train["prompt_text"].to_list(),
                     train["prompt_tokens"].to_numpy(), train["output_tokens"].to_numpy(),
                     epochs=p["finetune_epochs"], seed=p["seed"])
        E, M = self._parts(train)
        mean = E.astype(np.float64).mean(axis=0)
        k = max(0, min(p["n_components"], DIM, len(E) - 1))
        _, _, vt = np.linalg.svd(E - mean, full_matrices=False)
        self.pca = (mean, vt[:k])
        y = train["output_tokens"].to_numpy().astype(np.float64)
        self.index = NeighbourIndex(E, np.log1p(y))
        groups = (train["session_id"].cast(pl.Utf8).fill_null("").to_numpy()
                  if "session_id" in train.columns else None)
        if groups is not None:  # rows without a conversation are their own group
            groups = np.where(groups == "", np.arange(len(groups)).astype(str), groups)
        else:
            groups = np.arange(len(y))
        texts = train["prompt_text"].to_list()
        self.ridge, self.lexicon, lexical = None, None, None
        if p["lexical"]:
            num = ridge_inputs(M)
            lexical = out_of_fold(texts, num, np.log1p(y), groups)
            self.ridge = TextRidge().fit(texts, num, np.log1p(y))
            self.lexicon = LexicalIndex(self.ridge.tfidf(texts), np.log1p(y))
        X = design(E, M, texts, self.pca, self.index, groups, self.ridge, lexical, self.lexicon)
        names = ([f"pc{i}" for i in range(k)] + META + MEMORY + NAMES
                 + (["tfidf_ridge"] + [f"lex_{n}" for n in NEIGHBOUR]
                    if self.ridge is not None else []))
        self.boosters = []
        heads = [("quantile", 0.5, p["seed"] + i) for i in range(max(1, p["bag"]))]
        for objective, alpha, seed in heads + [(o, a, p["seed"]) for o, a in HEADS]:
            params = {
                "objective": objective, "learning_rate": p["learning_rate"],
                "num_leaves": p["num_leaves"], "min_data_in_leaf": p["min_child_samples"],
                "feature_fraction": p["feature_fraction"], "bagging_fraction": 0.8,
                "bagging_freq": 1, "lambda_l2": 1.0, "num_threads": p["threads"],
                "seed": seed, "deterministic": True, "verbose": -1,
                **({"alpha": alpha} if alpha else {}),
            }
            target = np.log1p(y) if alpha else y
            ds = lgb.Dataset(X, target, feature_name=names, params={"verbose": -1})
            self.boosters.append(lgb.train(params, ds, num_boost_round=p["n_estimators"]))

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        E, M = self._parts(df)
        X = design(E, M, df["prompt_text"].to_list(), self.pca, self.index, ridge=self.ridge,
                   lexicon=self.lexicon)
        return head_outputs(self.boosters, X, self.params["threads"])

    def _save_weights(self, path: Path) -> None:
        for i, b in enumerate(self.boosters):
            b.save_model(str(path / f"text_head{i}.txt"))
        np.savez(path / "pca.npz", mean=self.pca[0], components=self.pca[1])
        self.index.save(path)
        if self.ridge is not None:
            self.ridge.save(path)
        if self.lexicon is not None:
            self.lexicon.save(path)
        if self.tuned is not None:
            save_tuned(self.tuned, path)
        (path / "text.json").write_text(json.dumps(
            {"format": FORMAT, "heads": len(self.boosters), "embedding_dim": DIM,
             "meta": META, "memory": MEMORY, "n_components": int(len(self.pca[1])),
             "encoder": "fine-tuned" if self.tuned is not None else "pretrained"}))

    def _load_weights(self, path: Path, card: dict) -> None:
        self.boosters, self.pca, self.index, self.ridge, self.lexicon = load_heads(path)
        self.tuned = tuned_encoder(path)
