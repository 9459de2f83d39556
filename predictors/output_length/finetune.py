"""Fine-tune the prompt encoder (MiniLM) to output length, with Lightning.

The sentence encoder is trained end to end under a linear head that predicts log1p(output
tokens) from the mean-pooled prompt embedding and log2(prompt tokens), with an L1 loss (the
median in log space) plus a pairwise ranking loss over the batch (RankNet: softplus of the
mis-ordered score gap, for pairs whose log outputs differ by > 0.1), since schedulers use the
prediction to order requests. Only the encoder is kept: its embeddings then feed the text model's
PCA, nearest-prompt index and quantile heads (text.py), which a frozen encoder trained for
sentence similarity serves less well. AdamW (encoder 3e-5, head 1e-3) with a one-cycle
schedule. Sequences of 128 tokens, batch 32 (its CPU time: docs/results.md); `make_trainer`
runs the same code on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from servecast.predictors.training import fit_module


def mean_pool(transformer, batch: dict) -> torch.Tensor:
    """Mean of the token states over the attention mask (what MiniLM's pooling layer does)."""
    hidden = transformer(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


RANK_WEIGHT = 1.0  # weight of the pairwise ranking loss next to L1 (0: L1 only)


def pairwise_rank_loss(score: torch.Tensor, y: torch.Tensor, min_gap: float = 0.1
                       ) -> torch.Tensor:
    """Mean RankNet loss softplus(-2 (s_i - s_j) sign(y_i - y_j)) over the batch's pairs whose
    targets (log1p tokens) differ by more than `min_gap`; 0 when there are none."""
    dy = y[:, None] - y[None, :]
    keep = (dy.abs() > min_gap).to(score.dtype)
    ds = score[:, None] - score[None, :]
    loss = torch.nn.functional.softplus(-2.0 * ds * torch.sign(dy)) * keep
    return loss.sum() / keep.sum().clamp_min(1.0)


class PromptLengthTuner(pl.LightningModule):
    """Encoder + linear head on [embedding, log2 prompt tokens / 16] -> log1p(output)."""

    def __init__(self, transformer, dim: int, y_center: float, steps: int,
                 lr: float = 3e-5, head_lr: float = 1e-3, rank_weight: float = RANK_WEIGHT):
        super().__init__()
        self.transformer = transformer
        self.head = torch.nn.Linear(dim + 1, 1)
        self.y_center, self.steps, self.lr, self.head_lr = y_center, steps, lr, head_lr
        self.rank_weight = rank_weight

    def forward(self, batch: dict) -> torch.Tensor:
        e = mean_pool(self.transformer, batch)
        return self.head(torch.cat([e, batch["prompt"]], 1)).squeeze(1) + self.y_center

    def training_step(self, batch, _):
        s, y = self(batch), batch["y"]
        l1 = torch.nn.functional.l1_loss(s, y)
        self.log("train_l1", l1, prog_bar=True, batch_size=len(y))
        return l1 + self.rank_weight * pairwise_rank_loss(s, y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW([{"params": self.transformer.parameters(), "lr": self.lr},
                                 {"params": self.head.parameters(), "lr": self.head_lr}])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[self.lr, self.head_lr], total_steps=max(self.steps, 1), pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def finetune(st, texts: list[str], prompt_tokens: np.ndarray, output_tokens: np.ndarray,
             epochs: int = 1, batch_size: int = 32, seed: int = 0) -> None:
    """Tune the SentenceTransformer `st` in place on (prompt text, prompt tokens, output
    tokens) rows; it is left in eval mode with its weights rounded to fp16 precision (what
    `embeddings.save_tuned` stores, so a saved model predicts exactly as the fitted one)."""
    transformer = st[0].auto_model
    tokenizer, max_len = st.tokenizer, st.max_seq_length
    prompt = np.log2(1.0 + np.asarray(prompt_tokens, np.float64)) / 16.0
    y = np.log1p(np.asarray(output_tokens, np.float64))

    def collate(rows: list[int]) -> dict:
        b = dict(tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                           max_length=max_len, return_tensors="pt"))
        b["prompt"] = torch.tensor(prompt[rows], dtype=torch.float32)[:, None]
        b["y"] = torch.tensor(y[rows], dtype=torch.float32)
        return {k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "prompt", "y")}

    drop_last = len(texts) > batch_size
    batches = len(texts) // batch_size if drop_last else -(-len(texts) // batch_size)
    transformer.train()
    fit_module(lambda: PromptLengthTuner(transformer, transformer.config.hidden_size,
                                         float(np.median(y)), steps=epochs * batches),
               (texts,), epochs=epochs, batch_size=batch_size, seed=seed,
               drop_last=drop_last, collate=collate)
    st.eval()
    with torch.no_grad():
        for t in transformer.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half())
