"""Interference commands: `train interference`, `estimate interference`,
`collect host-metrics`, `collect interference`."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import (
    DbOption,
    FastOption,
    console,
    given,
    group,
    out_path,
    print_frame,
)
from servecast.errors import DataFileError, InvalidInputError
from servecast.predictors.interference.settings import PRESET


def register(app: typer.Typer) -> None:
    group(app, "train").command(
        "interference")(train_interference)
    group(app, "estimate").command(
        "interference")(estimate_interference)
    collect = group(app, "collect")
    collect.command("host-metrics")(collect_host_metrics)
    collect.command("interference")(collect_interference)


def _read(path: Path):
    import polars as pl

    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    try:
        return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        kind = "parquet" if path.suffix == ".parquet" else "CSV"
        raise DataFileError(f"{path}: cannot read as {kind} ({e})") from None


def _file_task(path: Path, labels: Path | None):
    """A Task from a long metrics file + labels file (the collector's output)."""
    import polars as pl

    from servecast.predictors.interference.tasks import Task

    metrics = _read(path)
    lab_path = labels or path.with_name(f"{path.stem}.labels{path.suffix}")
    lab = _read(lab_path)
    if "window_id" not in lab.columns or "perf" not in lab.columns:
        raise DataFileError(f"{lab_path}: needs columns window_id, perf (has "
                            f"{', '.join(lab.columns)})")
    n = lab.height
    if n < 5:
        raise InvalidInputError(f"{lab_path}: {n} labelled windows; need at least 5 "
                                "(train, validation and test)")
    split = ["train"] * n
    n_test = max(1, round(0.2 * n))
    n_val = max(1, round(0.15 * n))
    for i in range(n - n_test - n_val, n - n_test):
        split[i] = "val"
    for i in range(n - n_test, n):
        split[i] = "test"
    sku = (lab["condition"].cast(pl.Utf8) if "condition" in lab.columns
           else pl.Series([path.stem] * n))
    windows = pl.DataFrame({"window_id": lab["window_id"], "split": split, "vm_sku": sku,
                            "vm": [path.stem] * n, "time": list(range(n))})
    return Task(path.stem, metrics, lab.select("window_id", "perf"), windows)


def _colocation_task(db: Path, test_series: str | None):
    """The NTUA co-location task split by series (see `colocation.colocation_task`)."""
    from servecast.predictors.interference.colocation import colocation_task
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        series = sorted(store.sql(
            "SELECT DISTINCT series FROM interference_runs WHERE samples > 0")["series"])
        if len(series) < 3 and not test_series:
            raise InvalidInputError(
                f"{db}: {len(series)} series with counters; the colocation task needs 3 "
                "(train, validation, test): ingest more series of the study")
        test = test_series.split(",") if test_series else series[-1:]
        val = [s for s in series if s not in test][-1:]
        return colocation_task(store, test_series=test, val_series=val)


def train_interference(
    ctx: typer.Context,
    task: str = typer.Option("temporal", "--task",
                             help="temporal | fingerprint (Azure VM Noise in the store) | "
                                  "colocation (NTUA study in the store) | FILE "
                                  "(long metrics .csv/.parquet; labels in FILE.labels.*)"),
    out: Path = typer.Option(Path("models/interference"), "--out", help="model dir to write"),
    model: str = typer.Option(None, "--model",
                              help="dual | temporal | gbm | last | moving_average | mean | all "
                                   "| gbm-baseline (colocation only; default there: "
                                   "gbm-baseline, else dual)"),
    trace: str = typer.Option("azure_vm_noise", "--trace", help="vm_measurements trace"),
    labels: Path = typer.Option(None, "--labels", help="labels file for --task FILE"),
    test_series: str = typer.Option(None, "--test-series",
                                    help="colocation: held-out series, comma-separated "
                                         "(default: the last series; the one before validates)"),
    fast: bool = FastOption,
    epochs: int = typer.Option(PRESET.full.epochs, "--epochs", min=1,
                               help="epochs of the neural models"),
    db: Path = DbOption,
) -> None:
    """Train the interference predictor; prints test MAE per model and SKU, saves to --out."""
    from servecast.predictors.interference import evaluate as ev
    from servecast.predictors.interference.tasks import fingerprint_task, temporal_task

    if task in ("temporal", "fingerprint"):
        from servecast.store import Store

        with Store(db, read_only=True) as store:
            t = (temporal_task if task == "temporal" else fingerprint_task)(store, trace)
    elif task == "colocation":
        t = _colocation_task(db, test_series)
    else:
        t = _file_task(Path(task), labels)
    console.print(f"task {t.name}: {t.labels.height:,} windows, "
                  f"{t.metrics['metric'].n_unique()} metrics")
    print_frame(t.summary(), title="windows per split")
    if model is None:
        model = ev.default_model(t.name)
    if model == "gbm-baseline":
        if t.name != "colocation":
            raise InvalidInputError("--model gbm-baseline needs --task colocation (it reads "
                                    "the series' baseline runs)")
        _train_colocation_gbm(t, out, fast)
        return
    settings = PRESET.pick(fast, **given(ctx, epochs=epochs))
    models = ev.MODEL_ORDER if model == "all" else (model,)
    if model != "all" and model not in ev.MODEL_ORDER:
        raise InvalidInputError(f"--model {model!r}: one of {', '.join(ev.MODEL_ORDER)}, all")
    table = ev.compare(t, models, settings, out=out, log=console.print)
    print_frame(table, title=f"test MAE (percentage points of perf); CloudFormer reports "
                f"{ev.CLOUDFORMER_MAE_PP} on its own data")
    if model != "all":  # a single model: save it directly under --out for the Estimator
        import shutil

        src = out / t.name / model
        for f in src.iterdir():
            shutil.copy2(f, out / f.name)
        shutil.rmtree(out / t.name)
    console.print(f"[green]saved[/] {out}")


def _train_colocation_gbm(t, out: Path, fast: bool) -> None:
    """Fit the co-location default (`colocation_gbm.ColocationGBM`: variants chosen by inner
    series and setting folds on the train + val series, with the temporal network averaged
    into the unseen-settings variant when the setting folds favour it; --fast: 1 seed, 100
    rounds, 50 network steps in the inner and final fits), score it on the
    test series per family and save it under `out`."""
    import polars as pl

    from servecast.predictors import metrics as pm
    from servecast.predictors.interference import evaluate as ev
    from servecast.predictors.interference.colocation_gbm import ColocationGBM, with_references

    m = (ColocationGBM(seeds=1, rounds=100, net_train_steps=50) if fast
         else ColocationGBM()).fit(t)
    test = t.windows.filter(pl.col("split") == "test").select("window_id", "family")
    pred = m.predict(with_references(t).join(test, on="window_id", how="semi")).rename(
        {"perf": "pred"})
    j = test.join(t.labels, on="window_id").join(pred, on="window_id")
    fams = {f["family"][0]: f for f in j.partition_by("family")}
    rows = [("all", j), *sorted(fams.items(), key=lambda kv: kv[0])]
    table = pl.DataFrame([{"group": g, "n": f.height,
                           "mae_pp": 100 * pm.mae(f["perf"].to_numpy(), f["pred"].to_numpy()),
                           "covered": float(((f["perf"] >= f["lo"]) & (f["perf"] <= f["hi"]))
                                            .mean())} for g, f in rows])
    m.card["split"] = {"rule": ev._split_rule(t)}
    m.card["test"] = {r["group"]: {"n": r["n"], "mae_pp": r["mae_pp"], "covered": r["covered"]}
                      for r in table.iter_rows(named=True)}
    m.save(out)
    console.print(f"colocation: gbm-baseline (variant {m.card['variant']}, chosen by inner "
                  f"series folds; unseen co-runner settings: {m.card['unseen_variant']}, "
                  f"chosen by inner setting folds; network {m.card['unseen_network']}) "
                  f"test MAE {table['mae_pp'][0]:.2f} pp")
    print_frame(table, title="test MAE (percentage points of perf) and share of test runs "
                f"inside the {100 * m.coverage:.0f} % interval")
    console.print(f"[green]saved[/] {out}")


def estimate_interference(
    models: Path = typer.Option(..., "--models", help="models dir (or the interference dir)"),
    metrics: Path = typer.Option(..., "--metrics", help="long metrics .csv/.parquet"),
) -> None:
    """Predict perf per window of a long metrics file."""
    from servecast.estimator import Estimator

    print_frame(Estimator.load(models).interference_batch(_read(metrics)), max_rows=200)


def collect_host_metrics(
    interval: float = typer.Option(1.0, "--interval", help="seconds between samples"),
    duration: float = typer.Option(60.0, "--duration", help="seconds to record"),
    out: Path = typer.Option(..., "--out", help="output .csv or .parquet (long format)"),
    pid: list[int] = typer.Option(None, "--pid", help="also record this process (repeatable)"),
) -> None:
    """Record host metrics (CPU, memory, vmstat, disk, network, processes) in long format."""
    from servecast.collectors.host_metrics import sample_host

    df = sample_host(interval, duration, pid or [])
    path = out_path(out)
    df.write_parquet(path) if path.suffix == ".parquet" else df.write_csv(path)
    console.print(f"[green]wrote[/] {df.height:,} rows ({df['metric'].n_unique()} metrics) "
                  f"to {path}")


def collect_interference(
    target: str = typer.Option(..., "--target", help="command whose slowdown is measured"),
    corunner: list[str] = typer.Option(..., "--corunner", help="co-located command "
                                                                "(repeatable; killed after)"),
    repeats: int = typer.Option(3, "--repeats", help="runs per condition"),
    interval: float = typer.Option(1.0, "--interval", help="seconds between samples"),
    cpus: str = typer.Option("", "--cpus", help="pin target and co-runners, e.g. 0 or 0,1"),
    timeout: float = typer.Option(600.0, "--timeout", help="max seconds per target run"),
    out: Path = typer.Option(..., "--out", help="metrics .csv/.parquet (labels beside it)"),
) -> None:
    """Run the target alone and with co-runners; write labelled metric windows."""
    from servecast.collectors.host_metrics import run_experiment

    try:
        pin = [int(c) for c in cpus.split(",") if c.strip()] or None
    except ValueError:
        raise InvalidInputError(f"--cpus {cpus!r}: give CPU numbers like 0 or 0,1") from None
    ex = run_experiment(target, corunner, repeats, interval, pin, timeout)
    m, lab = ex.write(out)
    print_frame(ex.runs, title=f"runs (slowdown x{ex.slowdown():.2f})")
    console.print(f"[green]wrote[/] {m} and {lab}; train with "
                  f"`servecast train interference --task {m}`")
