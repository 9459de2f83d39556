"""`servecast gpus [GPU]`: the built-in GPU catalog, or one resolved spec with its sources."""

from __future__ import annotations

import json

import typer

from servecast.commands.common import console, print_frame


def register(app: typer.Typer) -> None:
    app.command("gpus")(gpus)


def gpus(
    gpu: str = typer.Argument(None, help="a catalog name or alias, or a spec file (NeuSight "
                              ".json / aiconfigurator .yaml): print its resolved spec"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Datasheet specs of the GPUs people serve on (the built-in catalog).

    Units: Dev_Mem GB, Mem_Bw GB/s, Freq MHz, SingleFLOPs / TensorFLOPs (dense bf16) /
    FP8FLOPs (dense) GFLOP/s, L2Cache MB, Interconnect_Bw / PCIe_Bw GB/s per GPU (both
    directions), TDP W. Every CLI and API that takes a GPU accepts these names or a spec file.
    """
    import polars as pl

    from servecast import gpus as cat

    if gpu is not None:
        spec = cat.resolve_spec(gpu)
        key = cat.catalog_name(gpu)
        src = {k: cat.sources()[s] for k, (_v, s) in cat.catalog()[key]["values"].items()} \
            if key and not gpu.lower().endswith((".json", ".yaml", ".yml")) else {}
        if as_json:
            console.print_json(json.dumps({"spec": spec, "sources": src}))
            return
        print_frame(pl.DataFrame({"key": list(spec), "value": [str(v) for v in spec.values()],
                                  "source": [src.get(k, "") for k in spec]}), title=gpu)
        return
    rows = []
    for key, entry in cat.catalog().items():
        v = {k: val for k, (val, _s) in entry["values"].items()}
        rows.append({"gpu": key, "name": entry["name"], "memory_GB": v.get("Dev_Mem"),
                     "bandwidth_GBs": v.get("Mem_Bw"), "bf16_TFLOPs": v["TensorFLOPs"] / 1e3,
                     "fp8_TFLOPs": v["FP8FLOPs"] / 1e3 if "FP8FLOPs" in v else None,
                     "SMs": v.get("Num_Sm"), "L2_MB": v.get("L2Cache"),
                     "link_GBs": v.get("Interconnect_Bw"), "TDP_W": v.get("TDP")})
    if as_json:
        console.print_json(json.dumps(cat.catalog()))
        return
    print_frame(pl.DataFrame(rows), title="GPU catalog (datasheet values; "
                "`servecast gpus NAME` shows each value's source)")
