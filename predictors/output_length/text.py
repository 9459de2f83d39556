"""Text model: prompt sentence embedding + session metadata -> quantile MLP (Lightning).

Inputs: 384-d MiniLM embedding of `prompt_text` (embeddings.py) and, scaled to ~[0, 1],
log prompt tokens, turn, previous-output and prompt-growth buckets of the session. Heads
(log1p token space, non-crossing): p50, p90 = p50 + softplus, p99 = p90 + softplus, trained
with pinball loss; the mean head with squared error on tokens / 1000.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.output_length.core import OutputLengthModel
from servecast.predictors.output_length.embeddings import DIM, embed

META = ["prompt_tokens", "turn_b", "prev_out_b", "growth_b"]
SCALE = np.array([1 / 10.0, 1 / 8.0, 1 / 15.0, 1 / 16.0])  # log1p(tokens)/10, codes / max


def meta_features(X: np.ndarray) -> np.ndarray:
    """Scaled metadata columns (n, 4) from the encoder matrix with columns META."""
    m = X.copy()
    m[:, 0] = np.log1p(m[:, 0])
    return m * SCALE


def forward(weights: list[np.ndarray], Z: np.ndarray) -> np.ndarray:
    """Numpy forward pass of the saved MLP -> (n, 4) raw (p50, p90, p99, mean) tokens."""
    h = Z
    n_layers = len(weights) // 2
    for i in range(n_layers):
        h = h @ weights[2 * i].T + weights[2 * i + 1]
        if i < n_layers - 1:
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))  # GELU
    sp = np.logaddexp(0.0, h[:, 1:3])  # softplus
    q50 = h[:, 0]
    q90 = q50 + sp[:, 0]
    q99 = q90 + sp[:, 1]
    return np.column_stack([np.expm1(np.column_stack([q50, q90, q99])).clip(0),
                            (h[:, 3] * 1000.0).clip(0)])


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


def _module(d_in: int, hidden: int, lr: float, weight_decay: float):
    import pytorch_lightning as pl_
    import torch
    from torch import nn

    class QuantileMLP(pl_.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(0.1),
                                     nn.Linear(hidden, hidden // 2), nn.GELU(),
                                     nn.Linear(hidden // 2, 4))

        def forward(self, z):
            return self.net(z)

        def training_step(self, batch, _):
            z, y = batch
            h = self(z)
            ly = torch.log1p(y)
            sp = nn.functional.softplus(h[:, 1:3])
            qs = torch.stack([h[:, 0], h[:, 0] + sp[:, 0], h[:, 0] + sp[:, 0] + sp[:, 1]], 1)
            loss = 0.0
            for j, a in enumerate((0.5, 0.9, 0.99)):
                d = ly - qs[:, j]
                loss = loss + torch.maximum(a * d, (a - 1) * d).mean()
            loss = loss + ((h[:, 3] - y / 1000.0) ** 2).mean()
            self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)

    return QuantileMLP()


class TextModel(OutputLengthModel):
    """Embedding + metadata quantile MLP; needs `prompt_text` in fit and predict frames."""

    name = "text"
    table_capable = False

    def __init__(self, epochs: int = 20, hidden: int = 256, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 256, seed: int = 0,
                 cache: str | None = None, **kw):
        super().__init__(**kw)
        self.params = dict(epochs=epochs, hidden=hidden, lr=lr, weight_decay=weight_decay,
                           batch_size=batch_size, seed=seed, cache=cache)
        self.weights: list[np.ndarray] = []

    def _params(self) -> dict:
        return {**self.params, "calib_frac": self.calib_frac, "window": self.window}

    def _inputs(self, df: pl.DataFrame) -> np.ndarray:
        if "prompt_text" not in df.columns or df["prompt_text"].null_count():
            i = (int(df["prompt_text"].is_null().arg_max()) if "prompt_text" in df.columns
                 else 0)
            raise InvalidInputError(
                f"row {i}: no prompt_text; the text model needs the prompt text (use the "
                "metadata model for requests without text)")
        self.encoder.columns = list(META)
        X = self.encoder.transform(df)
        cache = Path(self.params["cache"]) if self.params["cache"] else None
        E = embed(df["prompt_text"].to_list(), cache=cache)
        return np.hstack([E, meta_features(X)]).astype(np.float32)

    def _fit(self, train: pl.DataFrame) -> None:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from servecast.predictors.training import make_trainer

        Z = self._inputs(train)
        y = train["output_tokens"].to_numpy().astype(np.float32)
        p = self.params
        trainer = make_trainer(max_epochs=p["epochs"], seed=p["seed"])
        module = _module(Z.shape[1], p["hidden"], p["lr"], p["weight_decay"])
        g = torch.Generator().manual_seed(p["seed"])
        loader = DataLoader(TensorDataset(torch.from_numpy(Z), torch.from_numpy(y)),
                            batch_size=p["batch_size"], shuffle=True, generator=g)
        trainer.fit(module, loader)
        self.weights = [t.detach().cpu().numpy().astype(np.float64)
                        for t in module.net.parameters()]

    def _raw(self, df: pl.DataFrame) -> np.ndarray:
        return forward(self.weights, self._inputs(df).astype(np.float64))

    def _save_weights(self, path: Path) -> None:
        np.savez(path / "mlp.npz", *self.weights)
        (path / "text.json").write_text(json.dumps({"embedding_dim": DIM, "meta": META}))

    def _load_weights(self, path: Path, card: dict) -> None:
        with np.load(path / "mlp.npz") as z:
            self.weights = [z[f"arr_{i}"] for i in range(len(z.files))]
