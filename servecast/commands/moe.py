"""`servecast moe ...`: expert-load imbalance, small-MoE training, gamma_eff fits and
trajectories."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import (
    HELP_MARKUP,
    DbOption,
    FastOption,
    console,
    given,
    out_path,
    print_frame,
)
from servecast.predictors.moe_congestion.config import PRESET

_FULL = PRESET.full


def register(app: typer.Typer) -> None:
    moe = typer.Typer(help="MoE routing: imbalance analytics and the congestion coefficient "
                      "gamma_eff.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP)
    moe.command()(analyze)
    moe.command("train-small")(train_small)
    moe.command()(trajectory)
    moe.command()(fit)
    app.add_typer(moe, name="moe")


def analyze(
    trace: str = typer.Argument(..., help="a trace of moe_expert_loads (e.g. olmoe_routing)"),
    db: Path = DbOption,
    out: Path = typer.Option(None, "--out", help="folder for CSVs and the imbalance figure"),
) -> None:
    """Imbalance per (model, domain, layer) and leave-one-domain-out load prediction."""
    import polars as pl

    from servecast.analytics.moe import domain_distances, imbalance, shares
    from servecast.predictors.moe_congestion.domains import domain_transfer, transfer_summary
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        imb = imbalance(store, trace)
        dist = domain_distances(store, trace)
        n_domains = imb["domain"].n_unique()
        transfer = domain_transfer(shares(store, trace)) if n_domains >= 3 else None
    print_frame(imb.drop("checkpoint") if imb["checkpoint"].null_count() == imb.height else imb,
                title=f"expert-load imbalance of {trace}", max_rows=60)
    if not dist.is_empty():
        print_frame(dist.group_by(["model", "assignment", "layer"]).agg(
            pl.col("l1").mean().alias("mean_l1"), pl.col("l1").max().alias("max_l1"))
            .sort(["model", "assignment", "layer"]), title="L1 between domains' load shares")
    if transfer is not None:
        print_frame(transfer_summary(transfer),
                    title="predict one domain's loads from the others (held-out L1)")
    if out:
        from servecast.analytics.moe_plots import imbalance_plot

        imb.write_csv(out_path(out / "imbalance.csv"))
        dist.write_csv(out / "domain_distances.csv")
        if transfer is not None:
            transfer.write_csv(out / "domain_transfer.csv")
        console.print(f"wrote {imbalance_plot(imb, out / 'imbalance.png')} and CSVs")


def train_small(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="RUN_DIR to write"),
    alpha: float = typer.Option(_FULL.alpha, "--alpha",
                                help="auxiliary load-balancing coefficient"),
    steps: int = typer.Option(_FULL.steps, "--steps", help="optimizer steps"),
    n_experts: int = typer.Option(_FULL.n_experts, "--experts", help="experts per layer"),
    top_k: int = typer.Option(_FULL.top_k, "--top-k", help="experts per token"),
    layers: int = typer.Option(_FULL.layers, "--layers", help="transformer blocks"),
    snapshots: int = typer.Option(_FULL.snapshots, "--snapshots",
                                  help="routing snapshots over training"),
    text: Path = typer.Option(None, "--text", help="ShareGPT JSON(.gz) (default: shared copy)"),
    seed: int = typer.Option(_FULL.seed, "--seed"),
    fast: bool = FastOption,
) -> None:
    """Train a small MoE LM on ShareGPT text, saving routing statistics at checkpoints."""
    from servecast.predictors.moe_congestion.run import train_small_moe

    cfg = PRESET.pick(fast, **given(ctx, alpha=alpha, steps=steps, n_experts=n_experts,
                                    top_k=top_k, layers=layers, snapshots=snapshots, seed=seed))
    run = train_small_moe(out, cfg, text=text, log=console.print)
    console.print(f"run written to {run}; next: `servecast moe trajectory {run}`")


def trajectory(
    run_dir: Path = typer.Argument(..., help="a small-MoE RUN_DIR (see `moe train-small`)"),
    quality: str = typer.Option("oracle", "--quality", help="oracle, taylor or router"),
    types: int = typer.Option(8, "--types", help="k-means token types"),
    bootstrap: int = typer.Option(20, "--bootstrap", help="bootstrap refits for the CIs"),
    out: Path = typer.Option(None, "--out", help="folder for CSVs and figures (default RUN_DIR)"),
) -> None:
    """gamma_eff per checkpoint and layer with CIs, phase segmentation, plots."""
    from servecast.analytics.moe_plots import trajectory_plot
    from servecast.predictors.moe_congestion.trajectory import phases
    from servecast.predictors.moe_congestion.trajectory import trajectory as traj_of

    traj = traj_of(run_dir, quality, types, bootstrap)
    ph = phases(traj)
    split = [c for c in ("gamma_explicit", "gamma_implicit") if c in traj.columns]
    print_frame(traj.select("step", "layer", "gamma", "gamma_lo", "gamma_hi", *split,
                            "gamma_single", "l1_multi", "l1_single", "l1_softmax", "maxvio",
                            "eval_loss"),
                title=f"gamma_eff trajectory of {run_dir}", max_rows=100)
    print_frame(ph, title="phases (trend segments of gamma_eff)")
    out = out or run_dir
    traj.write_csv(out_path(out / "trajectory.csv"))
    ph.write_csv(out / "phases.csv")
    console.print(f"wrote {trajectory_plot(traj, ph, out / 'trajectory.png')} and CSVs")


def fit(
    run_dir: Path = typer.Argument(..., help="a small-MoE RUN_DIR"),
    out: Path = typer.Option(..., "--out", help="model dir to write (for Estimator.load)"),
    step: int = typer.Option(None, "--step", help="checkpoint step (default: last)"),
    quality: str = typer.Option("oracle", "--quality", help="oracle, taylor or router"),
    types: int = typer.Option(8, "--types", help="k-means token types"),
) -> None:
    """Fit the multi-type congestion game on one checkpoint and save it for the Estimator."""
    from servecast.pipelines.moe import fit_from_run

    game = fit_from_run(run_dir, step, quality, types)
    game.save(out)
    print_frame(game.params, title=f"congestion game saved to {out}")
