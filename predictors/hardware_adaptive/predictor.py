"""`HardwareAdaptiveLatencyPredictor`: NAS-Bench-201 latency on a new device from the
measured latency of the 10 reference architectures only (HELP, NeurIPS'21 protocol).
Research-only (see the package docstring): not a `Predictor`, no runtime.

meta_fit(latencies, architectures, meta_train_devices, meta_valid_devices, reference_archs)
    latencies: frame[device, arch_index, latency_ms]; architectures: frame[arch_index, arch]
adapt(samples) -> AdaptedLatencyModel     samples: frame[arch_index, latency_ms] (the refs)
adapted.predict(arch_indices) -> latency_ms array

The meta-learner is `meta_net.HardwareConditionedNet` (a LightningModule). Adaptation
computes the hardware embedding from the samples, optionally fine-tunes the head on them
(first-order MAML steps), then maps the predicted z-scores to ms with an affine fit in log
space on the same samples. Baselines: `flops_proxy`, `per_device_linear`, `no_adaptation`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError, UnknownNameError
from servecast.frames import to_polars
from servecast.predictors.base import SavedModel, read_torch_state
from servecast.predictors.hardware_adaptive.config import HelpSettings as _D
from servecast.predictors.hardware_adaptive.nasbench201 import encode, flops_params
from servecast.predictors.metrics import mape, spearman


def _pivot(latencies: pl.DataFrame, devices: list[str], n_arch: int) -> np.ndarray:
    """log latency [devices, n_arch]; raises if a device lacks any architecture."""
    out = np.full((len(devices), n_arch), np.nan)
    for i, d in enumerate(devices):
        part = latencies.filter(pl.col("device") == d)
        if part.is_empty():
            have = sorted(set(latencies["device"].to_list()))
            raise UnknownNameError(f"no latencies of device {d!r} (have: {', '.join(have)})")
        out[i, part["arch_index"].to_numpy()] = np.log(part["latency_ms"].to_numpy())
    if np.isnan(out).any():
        d = devices[int(np.isnan(out).any(1).argmax())]
        raise InvalidInputError(f"device {d!r} lacks latencies of some architectures")
    return out


def _samples(samples, n_arch: int) -> tuple[np.ndarray, np.ndarray]:
    df = to_polars(samples)
    for c in ("arch_index", "latency_ms"):
        if c not in df.columns:
            raise InvalidInputError(f"samples lack column {c!r} (need arch_index, latency_ms)")
    idx = df["arch_index"].to_numpy().astype(int)
    lat = df["latency_ms"].to_numpy().astype(float)
    if len(idx) < 3:
        raise InvalidInputError(f"need >= 3 measured architectures to adapt, got {len(idx)}")
    if (idx < 0).any() or (idx >= n_arch).any():
        raise InvalidInputError(f"arch_index outside 0..{n_arch - 1}")
    if not np.isfinite(lat).all() or (lat <= 0).any():
        raise InvalidInputError("samples' latency_ms must be finite and > 0")
    return idx, np.log(lat)


def _affine(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares y = a + b z (b clipped positive)."""
    b, a = np.polyfit(z, y, 1) if np.std(z) > 1e-9 else (0.0, float(y.mean()))
    if b <= 0:
        b, a = float(np.std(y) / max(np.std(z), 1e-9)), float(y.mean() - np.mean(z) * b)
    return float(a), float(b)


@dataclass
class AdaptedLatencyModel:
    """Latency model of one device: `predict(arch_indices)` -> ms."""

    log_ms: np.ndarray  # predicted log latency of every architecture

    def predict(self, arch_indices) -> np.ndarray:
        """Latency in ms of each architecture index."""
        idx = np.asarray(arch_indices, dtype=int)
        if idx.size and ((idx < 0).any() or (idx >= len(self.log_ms)).any()):
            raise InvalidInputError(f"arch_index outside 0..{len(self.log_ms) - 1}")
        return np.exp(self.log_ms[idx])


class HardwareAdaptiveLatencyPredictor(SavedModel):
    """HELP-style few-shot latency predictor over NAS-Bench-201 (see module doc)."""

    kind = "nasbench201_latency"

    def __init__(self, epochs: int = _D.epochs, steps_per_epoch: int = _D.steps_per_epoch,
                 hidden: int = _D.hidden, lr: float = _D.lr, mixup: float = _D.mixup,
                 adapt_steps: int = _D.adapt_steps, adapt_lr: float = _D.adapt_lr,
                 seed: int = _D.seed, **trainer_kw):
        """Parameters: `config.HelpSettings` (its defaults are these); `trainer_kw` go to
        `make_trainer`."""
        super().__init__()
        self.config = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, hidden=hidden, lr=lr,
                           mixup=mixup, adapt_steps=adapt_steps, adapt_lr=adapt_lr, seed=seed)
        self.trainer_kw = trainer_kw
        self.net = None
        self.arch_x: np.ndarray | None = None
        self.ref_idx: np.ndarray | None = None
        self.mean_embedding: np.ndarray | None = None

    # -- meta-training ---------------------------------------------------------------------
    def meta_fit(self, latencies, architectures, meta_train_devices: list[str],
                 meta_valid_devices: list[str], reference_archs: list[int]
                 ) -> HardwareAdaptiveLatencyPredictor:
        """Meta-train on `meta_train_devices` only; `meta_valid_devices` are checked to be
        disjoint and recorded (evaluate them with `evaluate`). Returns self."""
        import torch

        from servecast.predictors.hardware_adaptive.meta_net import (
            HardwareConditionedNet,
            ref_stats,
        )
        from servecast.predictors.training import fit_module

        overlap = set(meta_train_devices) & set(meta_valid_devices)
        if overlap:
            raise InvalidInputError(f"devices in both meta_train and meta_valid: {overlap}")
        lat, archs = to_polars(latencies), to_polars(architectures).sort("arch_index")
        self.arch_x = encode(archs["arch"].to_list())
        self.ref_idx = np.asarray(reference_archs, dtype=int)
        L = _pivot(lat, list(meta_train_devices), len(self.arch_x))
        cfg = self.config
        net = HardwareConditionedNet(self.arch_x.shape[1], len(self.ref_idx), cfg["hidden"],
                                     cfg["lr"], mixup=cfg["mixup"], epochs=cfg["epochs"])
        net.set_tasks(L, self.arch_x, self.ref_idx)
        steps = torch.arange(cfg["steps_per_epoch"]) + cfg["seed"] * 1_000_003
        fit_module(net, (steps,), epochs=cfg["epochs"], batch_size=1, seed=cfg["seed"],
                   loader_seed=cfg["seed"], **self.trainer_kw)
        net.log_lat = None  # not part of the model
        self.net = net.cpu().eval()
        emb, _, _ = ref_stats(torch.as_tensor(L[:, self.ref_idx], dtype=torch.float32))
        self.mean_embedding = emb.mean(0).numpy()
        self.card = {"data": {"meta_train": list(meta_train_devices),
                              "meta_valid": list(meta_valid_devices),
                              "reference_archs": self.ref_idx.tolist(),
                              "architectures": int(len(self.arch_x))},
                     "status": "research-only"}
        return self

    def _z(self, net, hw: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(self.arch_x)
            h = torch.as_tensor(hw, dtype=torch.float32)[None].expand(len(x), -1)
            return net(x, h).numpy()

    # -- adaptation --------------------------------------------------------------------------
    def adapt(self, samples) -> AdaptedLatencyModel:
        """Adapt to a new device from `samples` [arch_index, latency_ms] (its measured
        reference architectures). The embedding uses `reference_archs` in meta_fit order."""
        import torch

        from servecast.predictors.hardware_adaptive.meta_net import ref_stats

        self._need_fit()
        idx, y = _samples(samples, len(self.arch_x))
        pos = {a: i for i, a in enumerate(idx)}
        missing = [int(a) for a in self.ref_idx if a not in pos]
        if missing:
            raise InvalidInputError(f"samples lack reference architectures {missing}; measure "
                                    f"all of {self.ref_idx.tolist()}")
        ref = torch.as_tensor(y[[pos[a] for a in self.ref_idx]], dtype=torch.float32)[None]
        emb, mu, sd = ref_stats(ref)
        net = self.net
        if self.config["adapt_steps"]:
            net = copy.deepcopy(self.net).train()
            opt = torch.optim.SGD(net.head.parameters(), lr=self.config["adapt_lr"])
            x = torch.as_tensor(self.arch_x[idx])
            target = (torch.as_tensor(y, dtype=torch.float32) - mu[0]) / sd[0]
            h = emb.expand(len(idx), -1)
            for _ in range(self.config["adapt_steps"]):
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(x, h), target).backward()
                opt.step()
            net.eval()
        z = self._z(net, emb[0].numpy())
        a, b = _affine(z[idx], y)
        return AdaptedLatencyModel(a + b * z)

    def no_adaptation(self, samples=None) -> AdaptedLatencyModel:
        """Baseline: the meta-learner with the mean meta-train embedding (ignores the device);
        the scale is taken from `samples` when given so MAPE is comparable."""
        self._need_fit()
        z = self._z(self.net, self.mean_embedding)
        if samples is None:
            return AdaptedLatencyModel(z)
        idx, y = _samples(samples, len(self.arch_x))
        a, b = _affine(z[idx], y)
        return AdaptedLatencyModel(a + b * z)

    def flops_proxy(self, architectures, samples) -> AdaptedLatencyModel:
        """Baseline: log latency affine in log FLOPs, fitted on the samples."""
        archs = to_polars(architectures).sort("arch_index")["arch"].to_list()
        flops, _ = flops_params(archs)
        x = np.log(flops + 1.0)
        idx, y = _samples(samples, len(archs))
        a, b = _affine(x[idx], y)
        return AdaptedLatencyModel(a + b * x)

    def per_device_linear(self, samples, alpha: float = 1.0) -> AdaptedLatencyModel:
        """Baseline: ridge regression of log latency on the one-hot cell, on the samples."""
        from sklearn.linear_model import Ridge

        self._need_fit()
        idx, y = _samples(samples, len(self.arch_x))
        model = Ridge(alpha=alpha).fit(self.arch_x[idx], y)
        return AdaptedLatencyModel(model.predict(self.arch_x))

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, latencies, architectures, devices: list[str]) -> pl.DataFrame:
        """Per device and method: Spearman rho and MAPE (%) over all architectures except the
        references, each method given only the references' latencies on that device."""
        lat = to_polars(latencies)
        L = _pivot(lat, list(devices), len(self.arch_x))
        test = np.setdiff1d(np.arange(len(self.arch_x)), self.ref_idx)
        rows = []
        for d, logl in zip(devices, L, strict=True):
            samples = pl.DataFrame({"arch_index": self.ref_idx,
                                    "latency_ms": np.exp(logl[self.ref_idx])})
            methods = {"meta-learner (ours)": self.adapt(samples),
                       "no adaptation": self.no_adaptation(samples),
                       "FLOPs proxy": self.flops_proxy(architectures, samples),
                       "per-device linear": self.per_device_linear(samples)}
            true = np.exp(logl[test])
            for name, m in methods.items():
                pred = m.predict(test)
                rows.append({"device": d, "method": name, "spearman": spearman(pred, true),
                             "mape": mape(pred, true)})
        return pl.DataFrame(rows)

    @property
    def is_fitted(self) -> bool:
        return self.net is not None

    def _need_fit(self) -> None:
        self.check_fitted()

    # -- persistence -------------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        import torch

        torch.save(self.net.state_dict(), path / "meta_net.pt")
        np.savez(path / "arrays.npz", arch_x=self.arch_x, ref_idx=self.ref_idx,
                 mean_embedding=self.mean_embedding)

    @classmethod
    def _load(cls, path: Path, card: dict) -> HardwareAdaptiveLatencyPredictor:
        from servecast.predictors.hardware_adaptive.meta_net import HardwareConditionedNet

        model = cls.from_params(path, card["params"])
        with np.load(path / "arrays.npz") as z:
            model.arch_x, model.ref_idx = z["arch_x"], z["ref_idx"]
            model.mean_embedding = z["mean_embedding"]
        cfg = model.config
        net = HardwareConditionedNet(model.arch_x.shape[1], len(model.ref_idx), cfg["hidden"],
                                     cfg["lr"], mixup=cfg["mixup"], epochs=cfg["epochs"])
        net.load_state_dict(read_torch_state(path / "meta_net.pt"))
        model.net = net.eval()
        return model
