"""Kernel-latency commands: `train kernel-latency`, `train nasbench201-latency`,
`estimate kernel-latency`, `profile-kernels`."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import DbOption, FastOption, console, given, group, print_frame
from servecast.predictors.hardware_adaptive.config import PRESET as HELP_PRESET
from servecast.predictors.kernel_latency.config import PRESET as KERNEL_PRESET


def register(app: typer.Typer) -> None:
    train = group(app, "train")
    train.command("kernel-latency")(train_kernel_latency)
    train.command("nasbench201-latency")(train_nasbench201_latency)
    estimate = group(app, "estimate")
    estimate.command("kernel-latency")(estimate_kernel_latency)
    app.command("profile-kernels")(profile_kernels)


def train_kernel_latency(
    ctx: typer.Context,
    db: Path = DbOption,
    out: Path = typer.Option(Path("models/kernel_latency"), "--out", help="model folder"),
    epochs: int = typer.Option(KERNEL_PRESET.full.epochs, "--epochs", min=1),
    max_rows: int = typer.Option(0, "--max-rows", help="subsample training rows (0 = all)"),
    ensemble: int = typer.Option(KERNEL_PRESET.full.ensemble, "--ensemble", min=1,
                                 help="MLP members per feature view"),
    fast: bool = FastOption,
    vidur: bool = typer.Option(True, "--vidur/--no-vidur", help="also fit Vidur's operators"),
    neusight_trace: str = typer.Option("neusight", "--neusight-trace"),
    vidur_trace: str = typer.Option("vidur_mlp", "--vidur-trace"),
) -> None:
    """Fit the cross-device kernel-latency model (NeuSight kernels [+ Vidur operators])."""
    from servecast.predictors.kernel_latency.train import train_kernel_model
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        settings = KERNEL_PRESET.pick(fast, **given(ctx, epochs=epochs, ensemble=ensemble,
                                                    max_rows=max_rows or None))
        model, report = train_kernel_model(store, settings, vidur=vidur,
                                           neusight_trace=neusight_trace,
                                           vidur_trace=vidur_trace, log=console.print)
    model.save(out)
    print_frame(report, title="in-sample MdAPE (%) per op (leave-one-GPU-out: "
                "benchmarks/kernel_latency_logo.py)")
    console.print(f"[green]saved[/] {out}")


def train_nasbench201_latency(
    ctx: typer.Context,
    db: Path = DbOption,
    out: Path = typer.Option(Path("models/nasbench201_latency"), "--out"),
    epochs: int = typer.Option(HELP_PRESET.full.epochs, "--epochs", min=1),
    trace: str = typer.Option("help_nasbench201", "--trace"),
    fast: bool = FastOption,
) -> None:
    """Meta-train the HELP-style adapter on split.json's meta_train devices; report the
    meta_valid devices (Spearman rho, MAPE) next to the baselines."""
    import polars as pl

    from servecast.predictors.hardware_adaptive.train import train_help_model
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        settings = HELP_PRESET.pick(fast, **given(ctx, epochs=epochs))
        model, report = train_help_model(store, settings, trace=trace)
    model.save(out)
    print_frame(report.group_by("method", maintain_order=True)
                .agg(pl.col("spearman").mean(), pl.col("mape").mean()),
                title="meta_valid devices: mean Spearman rho and MAPE (%)")
    console.print(f"[green]saved[/] {out}")


def estimate_kernel_latency(
    device_spec: Path = typer.Option(..., "--device-spec", help="NeuSight device-config JSON"),
    op: str = typer.Option(..., "--op", help="bmm, linear, conv, ln, softmax, gelu, ..."),
    shape: str = typer.Option(..., "--shape", help="comma list in the op's order, e.g. "
                              "B,M,N,K for bmm: 8,1024,1024,1024"),
    models: Path = typer.Option(None, "--models", help="models dir (e.g. out/models from "
                                "`servecast demo`) or its kernel_latency folder"),
    model: Path = typer.Option(None, "--model", hidden=True, help="old name of --models"),
) -> None:
    """Latency (ms) of one op on the device whose spec sheet is given."""
    from servecast.errors import InvalidInputError
    from servecast.estimator import Estimator
    from servecast.predictors.kernel_latency.ops import canonical_op, shape_columns
    from servecast.predictors.kernel_latency.specs import load_spec

    if models is None and model is None:
        raise InvalidInputError("pass --models DIR: the models dir `servecast demo` writes "
                                "(out/models) or a `train kernel-latency --out` folder")

    spec = load_spec(device_spec)
    try:
        dims = [float(x) for x in shape.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(f"--shape {shape!r}: expected comma-separated numbers "
                                f"({','.join(shape_columns(op))})") from None
    rt = Estimator.load(models or model).runtime("kernel_latency")
    ms = rt.kernel_latency(op, dims, spec)
    roof = rt.roofline(op, dims, spec)
    name = canonical_op(op)
    console.print(f"{name} {dict(zip(shape_columns(name)[-len(dims):], dims, strict=False))} on "
                  f"{spec.get('Device', device_spec.stem)}: [bold]{ms:.4f} ms[/] "
                  f"(roofline {roof:.4f} ms)")


def profile_kernels(
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    ops: str = typer.Option("bmm,linear,softmax,ln,gelu", "--ops", help="comma list of ops"),
    out: Path = typer.Option(..., "--out", help="output .csv or .parquet"),
    repeats: int = typer.Option(10, "--repeats", min=1),
    warmup: int = typer.Option(3, "--warmup", min=0),
) -> None:
    """Measure op latencies on this machine in the kernel_latencies schema."""
    from servecast.collectors.kernel_profiler import profile_kernels as run
    from servecast.collectors.kernel_profiler import write_profile

    df = run([o for o in ops.split(",") if o.strip()], device=device, warmup=warmup,
             repeats=repeats, log=console.print)
    write_profile(df, out)
    console.print(f"[green]wrote[/] {df.height} measurements on {df['device'][0]} to {out}")
