"""Leave-one-GPU-out on NeuSight's five training GPUs: fit on four, predict the fifth from
its spec sheet. Prints MdAPE (%) per held-out GPU and op, model vs roofline-only.

    .venv/bin/python benchmarks/kernel_latency_logo.py [--db FILE] [--epochs 20]
        [--max-rows 150000] [--ensemble 3] [--views spec,shape] [--shape-weight W]
        [--power-gflops-per-w C] [--hidden 64] [--threads 1]

`--power-gflops-per-w inf` runs fp32 work at SingleFLOPs (no power limit: the model before
`physics.sustained_fp32`); other values replace `physics.POWER_GFLOPS_PER_W` for this run.

Without --db it ingests ../shared/datasets/gpu/neusight into a temporary store.
Acceptance: MdAPE <= 10% for bmm and linear, <= 15% over all ops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl


def open_store(db: str | None, adapters: list[tuple[str, str, str]]):
    """The store at `db`, or a temporary one with `adapters` ingested from the shared data.
    A `db` that is not a servecast store exits 2 naming the file and the ingest that makes
    it (the benchmarks' one refusal of a wrong `--db`)."""
    from servecast.datasets.catalog import shared_path
    from servecast.errors import ServecastError
    from servecast.store import Store

    if db:
        try:
            return Store(db, read_only=True)
        except ServecastError as e:
            ingests = "; ".join(f"`servecast ingest {source} ../shared/datasets/{rel} "
                                f"--trace {trace} --db {db}`" for source, rel, trace in adapters)
            print(f"--db: {e}\n  fix: {ingests} first, or leave out --db (a temporary store "
                  "with that data ingested)", file=sys.stderr)
            sys.exit(2)
    store = Store(Path(tempfile.mkdtemp()) / "kl.duckdb")
    for source, rel, trace in adapters:
        store.ingest(source, [shared_path(rel)], trace=trace)
    return store


def model_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the store and kernel-model training flags the kernel benchmarks share."""
    import inspect

    from servecast.predictors.kernel_latency import physics
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    ap.add_argument("--db")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--max-rows", type=int, default=150_000)
    ap.add_argument("--ensemble", type=int, default=3, help="members per view")
    ap.add_argument("--threads", type=int, default=1)
    weight = inspect.signature(KernelLatencyPredictor).parameters["shape_weight"].default
    ap.add_argument("--shape-weight", type=float, default=weight,
                    help="the shape view's share of the ensemble average")
    ap.add_argument("--power-gflops-per-w", type=float, default=physics.POWER_GFLOPS_PER_W,
                    help="sustained fp32 GFLOP/s per W of TDP (inf: no power limit)")
    return ap


def apply_physics(args: argparse.Namespace) -> None:
    """Set this run's power constant (`--power-gflops-per-w`) in `physics`."""
    from servecast.predictors.kernel_latency import physics

    physics.POWER_GFLOPS_PER_W = args.power_gflops_per_w


def main() -> None:
    import torch

    from servecast.predictors.kernel_latency import data
    from servecast.predictors.kernel_latency.evaluation import leave_one_gpu_out, logo_table
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    ap = model_args(argparse.ArgumentParser())
    ap.add_argument("--spec-features", action="store_true")
    ap.add_argument("--views", default="spec,shape",
                    help="member feature views (KernelLatencyPredictor): spec, shape or both")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    apply_physics(args)
    store = open_store(args.db, [("neusight", "gpu/neusight", "neusight")])
    frame, devices = data.neusight_frame(store), data.device_specs(store)
    t0 = time.perf_counter()
    res = leave_one_gpu_out(frame, devices, lambda devices: KernelLatencyPredictor(
        devices, epochs=args.epochs, max_rows=args.max_rows, batch_size=2048, hidden=args.hidden,
        ensemble=args.ensemble, views=tuple(args.views.split(",")), seed=args.seed,
        shape_weight=args.shape_weight,
        use_spec_features=args.spec_features),
        log=print)
    wall = time.perf_counter() - t0
    pl.Config.set_tbl_rows(200)
    pl.Config.set_float_precision(1)
    print("per held-out GPU (MdAPE %, model | roofline-only):")
    wide = res.filter(pl.col("op").is_in(["all", "bmm", "linear"])).pivot(
        on="op", index="held_out", values=["mdape", "roofline_mdape"])
    print(wide.with_columns(pl.col("held_out").str.slice(0, 28)))
    table = logo_table(res)
    print("mean over held-out GPUs (MdAPE %, model vs roofline-only):")
    print(table)
    get = {r["op"]: r["mdape"] for r in table.to_dicts()}
    print(f"acceptance: bmm {get['bmm']:.1f}% (<=10), linear {get['linear']:.1f}% (<=10), "
          f"all {get['all']:.1f}% (<=15); 5 folds in {wall:.0f} s "
          f"({wall / 5:.0f} s per fit of {args.ensemble} members x views {args.views}; CPU "
          "shared with other jobs)")


if __name__ == "__main__":
    main()
