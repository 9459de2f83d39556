"""Options for small data (issue 26; neither is a default): cross-run pretraining of the
temporal network's encoder, and GBM on its learned window embeddings.

- `pretrain_encoder`: self-supervised masked-counter reconstruction on windows WITHOUT
  labels: at every optimizer step a random MASK_FRAC of the observed (step, metric) cells
  of each window is hidden from the input, and a linear head on the temporal encoder's
  per-step output reconstructs their z-scores (L1 on the hidden cells only). Only the
  encoder (`step_in`, `pos`, `temporal`) is kept (`encoder_state`).
- model `temporal-pre` (`train_model`): the temporal network (`InterferencePredictor` with
  `pre_steps`, the same settings and step budget as without pretraining) whose encoder
  starts from the one pretrained on all the task's train + val windows (the test split
  never enters); saved and loaded as any interference predictor.
- model `gbm-embed` (`EmbedGBM`): LightGBM on the window statistics of the `gbm` model
  (`baselines.window_stats`) plus the pretrained encoder's pooled window embedding (masked
  mean of the observed steps' outputs, then the last step's: 2 x d_model features), fitted
  on the train split, early-stopped on the val split.

Both normalize with a `Normalizer` fitted on the train split's windows, as the predictor does.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import polars as pl
import torch

from servecast.errors import UnknownNameError
from servecast.predictors.interference.frames import Normalizer, clean_metrics, tensorize
from servecast.predictors.interference.net import InterferenceNet, _masked_mean
from servecast.predictors.interference.runtime import PERF_MIN
from servecast.predictors.interference.tasks import Task

MODELS = ("temporal-pre", "gbm-embed")
#: share of the observed cells hidden in each pretraining batch
MASK_FRAC = 0.25
#: optimizer steps of pretraining (batches of the fine-tuning batch size)
PRE_STEPS = 300
ENCODER = ("step_in.", "pos", "temporal.")


def _net(n_metrics: int, max_steps: int, hp: dict) -> InterferenceNet:
    return InterferenceNet(n_metrics, max_steps, hp["d_model"], hp.get("heads", 4),
                           hp["layers"], hp.get("dropout", 0.1), "temporal", True)


def pretrain_encoder(values: np.ndarray, mask: np.ndarray, hp: dict, steps: int = PRE_STEPS,
                     batch: int = 64, seed: int = 0, mask_frac: float = MASK_FRAC
                     ) -> tuple[dict, dict]:
    """Masked-counter pretraining on unlabelled windows values/mask [N, T, M] (z-scores).
    `hp`: d_model, layers (heads, dropout, lr optional). Returns (encoder state dict, log
    {steps, loss_first, loss_last (L1 of hidden z-scores, mean of the first / last 20
    steps), cpu_s})."""
    c0 = time.process_time()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, t, m = values.shape
    net = _net(m, t, hp)
    head = torch.nn.Linear(hp["d_model"], m)
    params = [p for k, p in net.named_parameters() if k.startswith(ENCODER)]
    opt = torch.optim.AdamW(params + list(head.parameters()), lr=hp.get("lr", 5e-3),
                            weight_decay=1e-2)
    v_all, m_all = torch.from_numpy(values), torch.from_numpy(mask)
    net.train()
    losses = []
    for _ in range(int(steps)):
        idx = torch.randint(0, n, (min(batch, n),), generator=gen)
        v, mk = v_all[idx], m_all[idx]
        hide = mk & (torch.rand(mk.shape, generator=gen) < mask_frac)
        seen = mk.any(-1)
        recon = head(net.encode(v, mk & ~hide, seen))
        loss = (recon - v).abs()[hide].mean() if hide.any() else recon.sum() * 0
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    state = {k: v.detach().clone() for k, v in net.state_dict().items() if k.startswith(ENCODER)}
    return state, {"steps": int(steps), "loss_first": float(np.mean(losses[:20])),
                   "loss_last": float(np.mean(losses[-20:])),
                   "cpu_s": time.process_time() - c0}


@torch.no_grad()
def embed(state: dict, values: np.ndarray, mask: np.ndarray, hp: dict) -> np.ndarray:
    """Pooled window embedding [N, 2 * d_model] of the encoder `state`: the masked mean of
    the observed steps' outputs, then the last step's output (the network's pooling)."""
    net = _net(values.shape[2], values.shape[1], hp)
    net.load_state_dict(state, strict=False)
    net.eval()
    v, mk = torch.from_numpy(values), torch.from_numpy(mask)
    h = net.encode(v, mk)
    return torch.cat([_masked_mean(h, mk.any(-1)), h[:, -1]], -1).numpy()


def pretrain_windows(df: pl.DataFrame, norm: Normalizer, max_steps: int, hp: dict,
                     steps: int, batch: int, seed: int) -> tuple[dict, dict]:
    """`pretrain_encoder` on every window of the clean metrics `df` (normalized by `norm`,
    in sorted window order: the same batches every run); the log adds `windows`."""
    ids = sorted(df["window_id"].unique().to_list())
    win = tensorize(df, norm, max_steps, ids)
    state, log = pretrain_encoder(win.values, win.mask, hp, steps, batch, seed)
    return state, dict(log, windows=len(win.ids))


def _pretrained(task: Task, settings: dict, max_steps: int, pre_steps: int
                ) -> tuple[Normalizer, dict, dict]:
    """(normalizer fitted on the train split, encoder pretrained on train + val windows, log)."""
    norm = Normalizer.fit(clean_metrics(task.part("train")[0]))
    ids = task.windows.filter(pl.col("split") != "test")["window_id"]
    df = clean_metrics(task.metrics.filter(pl.col("window_id").is_in(ids.implode())))
    state, log = pretrain_windows(df, norm, max_steps, settings, pre_steps,
                                  settings.get("batch_size", 64), settings.get("seed", 0))
    return norm, state, log


def train_model(task: Task, model: str, settings, max_steps: int, pre_steps: int = PRE_STEPS):
    """Fit option `model` (MODELS) on the task's train split (val: early stopping / best
    epoch); returns an object with `predict(metrics) -> [window_id, perf]` and `card`."""
    from servecast.predictors.interference import evaluate as ev

    if model not in MODELS:
        raise UnknownNameError(f"unknown pretraining option {model!r}; one of "
                               f"{', '.join(MODELS)}")
    cfg = ev.as_dict(settings)
    if model == "temporal-pre":
        return ev.train_model(task, "temporal", cfg, max_steps=max_steps, pre_steps=pre_steps)
    norm, state, log = _pretrained(task, cfg, max_steps, pre_steps)
    return EmbedGBM(norm, state, cfg, max_steps, log).fit(task)


@dataclasses.dataclass
class EmbedGBM:
    """LightGBM on window statistics + pretrained window embeddings (model `gbm-embed`)."""

    norm: Normalizer
    state: dict
    hp: dict
    max_steps: int
    log: dict
    gbm: object = None

    def features(self, metrics: pl.DataFrame, ids: list | None = None) -> tuple[list, np.ndarray]:
        from servecast.predictors.interference.baselines import window_stats

        win = tensorize(clean_metrics(metrics), self.norm, self.max_steps, ids)
        x = np.concatenate([window_stats(win.values, win.mask),
                            embed(self.state, win.values, win.mask, self.hp)], 1)
        return win.ids, x

    def fit(self, task: Task) -> EmbedGBM:
        from servecast.predictors.interference.baselines import GBMRegressor

        (tm, tl), (vm, vl) = task.part("train"), task.part("val")
        _, x = self.features(tm, tl["window_id"].to_list())
        val = (None, None)
        if vl.height:
            val = (self.features(vm, vl["window_id"].to_list())[1], vl["perf"].to_numpy())
        self.gbm = GBMRegressor(n_estimators=self.hp.get("gbm_trees", 600),
                                seed=self.hp.get("seed", 0)).fit(x, tl["perf"].to_numpy(), *val)
        self.card = {"model": "gbm-embed", "pretraining": self.log, "features": x.shape[1]}
        return self

    def predict(self, metrics: pl.DataFrame) -> pl.DataFrame:
        ids, x = self.features(metrics)
        return pl.DataFrame({"window_id": ids,
                             "perf": np.clip(self.gbm.predict(x), PERF_MIN, 1.0)})
