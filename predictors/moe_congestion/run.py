"""Train a small MoE LM on ShareGPT text and save routing statistics at checkpoints.

RUN_DIR layout:
    run.json                      config, vocab coverage, final losses, seconds per phase
    vocab.npy                     reduced cl100k vocabulary (see `text.py`)
    model.pt                      final weights (state_dict)
    checkpoints/step_000000.npz   per checkpoint, for held-out eval windows:
        batch (N,), doc (N,) token -> eval batch / conversation; loss (N,) nats
        logits_<l> (N, E) router logits, choices_<l> (N, k) chosen experts
        oracle_<l>, taylor_<l> (N, E) quality (nats)
    final/windows_<N>.npz         (`final_snapshot`) the same arrays for N eval windows of the
                                  held-out conversations under the saved final model (oracle
                                  quality only by default), computed without retraining
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from servecast.errors import DataFileError
from servecast.predictors.moe_congestion.config import RunConfig


@lru_cache(maxsize=2)
def prepare_corpus(text: str | None, train_conversations: int, eval_conversations: int,
                   vocab_size: int, context: int):
    """(vocab, train windows (N, context+1), eval windows, eval conversation ids); cached."""
    from servecast.predictors.moe_congestion.text import build_vocab, sharegpt_texts, windows

    texts = sharegpt_texts(text, train_conversations + eval_conversations)
    if len(texts) < 2:
        raise DataFileError(f"{text or 'ShareGPT'}: fewer than 2 conversations with text")
    n_train = min(train_conversations, len(texts) - 1)
    train, held = texts[:n_train], texts[n_train:]
    vocab = build_vocab(train, vocab_size)
    tr, _ = windows(vocab.encode(train), context)
    ev, docs = windows(vocab.encode(held), context)
    return vocab, tr, ev, docs


def sample_windows(ev: np.ndarray, docs: np.ndarray, n: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`n` eval windows (and their conversation ids) drawn without replacement, seeded, kept in
    corpus order."""
    keep = np.sort(np.random.default_rng(seed).choice(len(ev), min(n, len(ev)), replace=False))
    return ev[keep], docs[keep]


def small_moe(cfg: RunConfig, vocab_size: int):
    """An untrained `SmallMoELM` with the architecture and optimizer settings of `cfg`."""
    from servecast.predictors.moe_congestion.model import SmallMoELM

    return SmallMoELM(vocab=vocab_size, d=cfg.d, heads=cfg.heads, layers=cfg.layers,
                      d_ff=cfg.d_ff, n_experts=cfg.n_experts, top_k=cfg.top_k,
                      context=cfg.context, alpha=cfg.alpha, lr=cfg.lr, steps=cfg.steps)


def train_small_moe(out_dir: str | Path, config: RunConfig | None = None,
                    text: str | Path | None = None, log=None) -> Path:
    """Train one small MoE (config.alpha = aux balancing coefficient) and write RUN_DIR.

    text: ShareGPT JSON(.gz) (default: the shared copy). Returns the run directory.
    """
    import torch

    from servecast.predictors.training import fit_module, seed_everything

    cfg = config or RunConfig()
    out = Path(out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    vocab, tr, ev, docs = prepare_corpus(None if text is None else str(text),
                                         cfg.train_conversations, cfg.eval_conversations,
                                         cfg.vocab, cfg.context)
    ev, docs = sample_windows(ev, docs, cfg.eval_windows, cfg.seed)
    vocab.save(out / "vocab.npy")
    t_data = time.perf_counter() - t0

    seed_everything(cfg.seed)
    model = small_moe(cfg, vocab.size)
    every = max(1, cfg.steps // max(1, cfg.snapshots))
    snap = routing_snapshots(out / "checkpoints", torch.from_numpy(ev), docs,
                            cfg.context, cfg.batch_windows, every)
    t1 = time.perf_counter()
    trainer = fit_module(model, (tr,), epochs=10_000, batch_size=cfg.batch_size,
                         drop_last=True, max_steps=cfg.steps, seed=cfg.seed,
                         callbacks=[snap], progress=False)
    t_train = time.perf_counter() - t1
    torch.save(model.state_dict(), out / "model.pt")
    meta = {"config": asdict(cfg), "vocab_coverage": vocab.coverage,
            "train_tokens": int(tr.size), "eval_tokens": int(ev[:, :-1].size),
            "final": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "seconds": {"data": t_data, "train_incl_snapshots": t_train,
                        "snapshots": snap.seconds},
            "device": str(model.device), "checkpoints": snap.steps}
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    if log:
        ce = meta["final"].get("ce", float("nan"))
        log(f"alpha={cfg.alpha}: {cfg.steps} steps in {t_train:.0f}s "
            f"(snapshots {snap.seconds:.0f}s), final ce {ce:.3f}")
    return out


def routing_snapshots(*args, **kwargs):
    """The `RoutingSnapshots` Lightning callback (defined on first use: keeps Lightning off the
    import path of the analysis code)."""
    import pytorch_lightning as pl

    class RoutingSnapshots(_SnapshotMixin, pl.Callback):
        pass

    return RoutingSnapshots(*args, **kwargs)


class _SnapshotMixin:
    """Lightning callback: routing statistics of the eval windows at step 0 and every
    `every` optimizer steps (see the module docstring for the file contents)."""

    def __init__(self, folder: Path, eval_windows, docs: np.ndarray, context: int,
                 batch_windows: int, every: int):
        self.folder, self.ev, self.docs, self.every = folder, eval_windows, docs, every
        self.context, self.batch_windows = context, batch_windows
        self.steps: list[int] = []
        self.seconds = 0.0

    def on_train_start(self, trainer, model):
        self.snapshot(model, 0)

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            self.snapshot(model, step)

    def snapshot(self, model, step: int) -> None:
        if step in self.steps:
            return
        t = time.perf_counter()
        was_training = model.training
        arrays = snapshot_arrays(model, self.ev, self.docs, self.context, self.batch_windows)
        np.savez_compressed(self.folder / f"step_{step:06d}.npz", **arrays)
        self.steps.append(step)
        if was_training:
            model.train()
        self.seconds += time.perf_counter() - t


def snapshot_arrays(model, ev, docs: np.ndarray, context: int, batch_windows: int,
                    qualities: tuple[str, ...] = ("oracle", "taylor")) -> dict[str, np.ndarray]:
    """Routing statistics of eval windows `ev` (N, context+1) under `model` (the arrays of a
    checkpoint file, see the module docstring); `qualities`: which of oracle / taylor to
    compute (router quality comes from the logits)."""
    import torch

    from servecast.collectors.moe_routing import RoutingRecorder
    from servecast.predictors.moe_congestion.quality import oracle_quality, taylor_quality

    model.eval()
    ev = ev.to(model.device)
    arrays = {}
    with RoutingRecorder(model) as rec, torch.no_grad():
        logits = model(ev[:, :-1])
        arrays["loss"] = model.token_loss(logits, ev[:, 1:]).reshape(-1).cpu().numpy()
    q = {"oracle": oracle_quality(model, ev) if "oracle" in qualities else None,
         "taylor": taylor_quality(model, ev) if "taylor" in qualities else None}
    for i in range(len(model.blocks)):
        arrays[f"logits_{i}"] = rec.logits(i).astype(np.float32)
        arrays[f"choices_{i}"] = rec.choices(i).astype(np.int16)
        for name, val in q.items():
            if val is not None:
                arrays[f"{name}_{i}"] = val[i].astype(np.float32)
    n_win = ev.shape[0]
    arrays["batch"] = np.repeat(np.arange(n_win) // batch_windows, context)
    arrays["doc"] = np.repeat(np.asarray(docs), context)
    return arrays


def load_final_model(run_dir: str | Path):
    """The trained `SmallMoELM` of RUN_DIR (model.pt, architecture from run.json), eval mode."""
    import torch

    run = Path(run_dir)
    cfg = run_config(run).get("config")
    if not cfg or not (run / "model.pt").is_file():
        raise DataFileError(f"{run}: needs run.json and model.pt (a finished training run)")
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    model = small_moe(RunConfig(**cfg), int(state["tok.weight"].shape[0]))
    model.load_state_dict(state)
    return model.eval()


def final_snapshot(run_dir: str | Path, n_windows: int, seed: int = 1,
                   qualities: tuple[str, ...] = ("oracle",), text: str | Path | None = None,
                   log=None) -> Path:
    """A larger routing snapshot of the run's saved final model, without retraining.

    `n_windows` eval windows sampled (seeded, kept in corpus order) from the run's held-out
    conversations (the same `eval_conversations` never used in LM training, same vocabulary),
    grouped into routing batches of the run's `batch_windows`; written to
    RUN_DIR/final/windows_<N>.npz (same arrays as a checkpoint; `qualities` as in
    `snapshot_arrays`) and reused when present. Returns the file.
    """
    import torch

    run = Path(run_dir)
    out = run / "final" / f"windows_{n_windows}.npz"
    if out.is_file():
        return out
    cfg = run_config(run)["config"]
    t0 = time.perf_counter()
    model = load_final_model(run)
    _, _, ev, docs = prepare_corpus(None if text is None else str(text),
                                    cfg["train_conversations"], cfg["eval_conversations"],
                                    cfg["vocab"], cfg["context"])
    ev, docs = sample_windows(ev, docs, n_windows, seed)
    arrays = snapshot_arrays(model, torch.from_numpy(ev), docs, cfg["context"],
                             cfg["batch_windows"], qualities)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    if log:
        log(f"{run.name}: final snapshot of {len(ev)} windows "
            f"({len(np.unique(docs))} held-out conversations) in "
            f"{time.perf_counter() - t0:.0f}s -> {out}")
    return out


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of each routing snapshot in RUN_DIR, by step."""
    run = Path(run_dir)
    files = sorted((run / "checkpoints").glob("step_*.npz"))
    if not files:
        raise DataFileError(f"{run}: no checkpoints/step_*.npz; train a run first "
                            "(`servecast moe train-small --out RUN_DIR`)")
    return [(int(f.stem.split("_")[1]), f) for f in files]


def run_config(run_dir: str | Path) -> dict:
    """run.json of RUN_DIR (empty dict if absent)."""
    p = Path(run_dir) / "run.json"
    return json.loads(p.read_text()) if p.is_file() else {}
