"""CLI defaults come from the settings they stand for: every option below must show the
default of the config dataclass / preset / function it feeds (a default typed again by hand
that drifts fails here), the presets stay importable without numpy, and `--fast` switches
the options left at their default to the fast preset."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from servecast.commands import analytics, interference, kernel_latency, moe, output_length
from servecast.predictors.hardware_adaptive.config import PRESET as HELP
from servecast.predictors.hardware_adaptive.config import HelpSettings
from servecast.predictors.interference.settings import PRESET as INTERFERENCE
from servecast.predictors.kernel_latency.config import PRESET as KERNEL
from servecast.predictors.moe_congestion.config import PRESET as MOE
from servecast.predictors.output_length.settings import PRESET as OUTPUT_LENGTH
from servecast.predictors.presets import Preset, default


def _cli_default(command, name: str):
    return inspect.signature(command).parameters[name].default.default


def _param_default(function, name: str):
    return inspect.signature(function).parameters[name].default


def _sources():
    """(command, its parameter, the default it must show)."""
    from servecast.analytics.synth import fit_workload, synthesize
    from servecast.collectors.host_metrics import sample_host
    from servecast.collectors.kernel_profiler import profile_kernels
    from servecast.pipelines.moe import fit_from_run
    from servecast.predictors.interference.tasks import temporal_task
    from servecast.predictors.kernel_latency.train import train_kernel_model
    from servecast.predictors.moe_congestion.trajectory import trajectory

    rows = [(moe.train_small, f, getattr(MOE.full, f))
            for f in ("alpha", "steps", "n_experts", "top_k", "layers", "snapshots", "seed")]
    rows += [
        (kernel_latency.train_nasbench201_latency, "epochs", HELP.full.epochs),
        (kernel_latency.train_kernel_latency, "epochs", KERNEL.full.epochs),
        (kernel_latency.train_kernel_latency, "ensemble", KERNEL.full.ensemble),
        (interference.train_interference, "epochs", INTERFERENCE.full.epochs),
        (interference.train_interference, "trace", _param_default(temporal_task, "trace")),
        *[(output_length.train_output_length, f, getattr(OUTPUT_LENGTH.full, f))
          for f in ("n_estimators", "finetune_epochs")],
    ]
    #: (command, its parameter, the function it feeds, that function's parameter)
    same_as = [
        *[(kernel_latency.train_kernel_latency, p, train_kernel_model, p)
          for p in ("vidur", "neusight_trace", "vidur_trace")],
        *[(kernel_latency.profile_kernels, p, profile_kernels, p)
          for p in ("repeats", "warmup", "device")],
        (interference.collect_host_metrics, "interval", sample_host, "interval"),
        (moe.trajectory, "quality", trajectory, "quality"),
        (moe.trajectory, "types", trajectory, "n_types"),
        (moe.trajectory, "bootstrap", trajectory, "n_bootstrap"),
        (moe.fit, "quality", trajectory, "quality"),
        (moe.fit, "types", fit_from_run, "n_types"),
        (analytics.synth, "window_s", fit_workload, "window_s"),
        (analytics.synth, "rate_scale", synthesize, "rate_scale"),
        (analytics.synth, "seed", synthesize, "seed"),
    ]
    return rows + [(c, name, _param_default(f, p)) for c, name, f, p in same_as]


def test_cli_defaults_equal_the_settings_they_feed():
    wrong = [f"{c.__module__}.{c.__name__} --{name}: CLI {_cli_default(c, name)!r}, "
             f"settings {want!r}" for c, name, want in _sources()
             if _cli_default(c, name) != want]
    assert not wrong, "\n".join(wrong)


def test_presets_and_commands_import_without_numpy():
    code = ("import sys; import servecast.cli, servecast.predictors.presets, "
            "servecast.predictors.moe_congestion.config, "
            "servecast.predictors.interference.settings, "
            "servecast.predictors.hardware_adaptive.config, "
            "servecast.predictors.output_length.settings; "
            "print(sorted(m for m in ('numpy', 'polars', 'torch', 'duckdb') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_predictor_defaults_are_the_settings_defaults():
    from servecast.predictors.hardware_adaptive.predictor import (
        HardwareAdaptiveLatencyPredictor,
    )

    for name in inspect.signature(HelpSettings).parameters:
        assert (_param_default(HardwareAdaptiveLatencyPredictor, name)
                == default(HelpSettings, name)), name
    assert HardwareAdaptiveLatencyPredictor().config == HELP.full.__dict__


def test_kernel_predictor_defaults_are_the_full_preset():
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    for name, value in KERNEL.full.__dict__.items():
        assert _param_default(KernelLatencyPredictor, name) == value, name


def test_preset_pick_and_errors():
    assert MOE.pick(True) == MOE.fast and MOE.pick(False) == MOE.full
    assert MOE.pick(True, steps=7, seed=None).steps == 7  # None: not given
    assert MOE.pick(True, steps=7).snapshots == MOE.fast.snapshots
    with pytest.raises(TypeError, match="one config dataclass"):
        Preset(fast=MOE.fast, full=HELP.full)
    with pytest.raises(ValueError, match="HelpSettings has no field 'epoch'"):
        default(HelpSettings, "epoch")


def test_fast_takes_the_fast_preset_for_options_not_given():
    """`given` + `Preset.pick`, as the train commands use them, through typer itself."""
    from servecast.commands.common import FastOption, given

    seen = []
    app = typer.Typer()

    @app.command()
    def train(ctx: typer.Context, epochs: int = typer.Option(HELP.full.epochs, "--epochs"),
              fast: bool = FastOption):
        seen.append(HELP.pick(fast, **given(ctx, epochs=epochs)))

    runner = CliRunner()
    for args in ([], ["--fast"], ["--fast", "--epochs", "2"], ["--epochs", "30"]):
        assert runner.invoke(app, args).exit_code == 0
    assert seen == [HELP.full, HELP.fast, HelpSettings(epochs=2, steps_per_epoch=60),
                    HELP.full]
