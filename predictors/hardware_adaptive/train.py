"""Training entry point of the research-only HELP model (CLI, demo, benchmark)."""

from __future__ import annotations

from dataclasses import asdict

import polars as pl

from servecast.predictors.hardware_adaptive.config import PRESET, HelpSettings
from servecast.predictors.hardware_adaptive.predictor import HardwareAdaptiveLatencyPredictor
from servecast.predictors.kernel_latency import data


def train_help_model(store, settings: HelpSettings | None = None,
                     trace: str = "help_nasbench201", **trainer_kw
                     ) -> tuple[HardwareAdaptiveLatencyPredictor, pl.DataFrame]:
    """Meta-train with `settings` (default: the full preset) on split.json's meta_train
    devices; returns (model, evaluation on the meta_valid devices [device, method,
    spearman, mape])."""
    lat, archs, splits = data.help_frames(store, trace)
    model = HardwareAdaptiveLatencyPredictor(**asdict(settings or PRESET.full), **trainer_kw)
    model.meta_fit(lat, archs, splits["meta_train"], splits["meta_valid"],
                   splits["hardware_embedding_arch_indices"])
    report = model.evaluate(lat, archs, splits["meta_valid"])
    model.card["metrics"] = {"meta_valid": report.to_dicts()}
    return model, report
