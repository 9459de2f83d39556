"""Fast demo of the kernel-latency area (`servecast demo` calls `demo_kernel_latency`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl


def demo_kernel_latency(store, out: str | Path, log: Callable[[str], None] = print
                        ) -> pl.DataFrame:
    """Train both models with their fast presets on the store's `neusight`, `vidur_mlp` and
    `help_nasbench201` traces, save them under `out/kernel_latency` and
    `out/nasbench201_latency`, estimate bmm 8x1024^3 on every known spec sheet.
    Returns rows [what, value] for the summary."""
    import numpy as np

    from servecast.predictors.hardware_adaptive.config import PRESET
    from servecast.predictors.hardware_adaptive.train import train_help_model
    from servecast.predictors.kernel_latency import data
    from servecast.predictors.kernel_latency.config import PRESET as KERNEL_PRESET
    from servecast.predictors.kernel_latency.runtime import Runtime
    from servecast.predictors.kernel_latency.train import train_kernel_model

    out = Path(out)
    model, report = train_kernel_model(store, KERNEL_PRESET.fast, log=log)
    path = model.save(out / "kernel_latency")
    rows = [{"what": f"kernel MdAPE in-sample {r['op']} (%)", "value": r["mdape"]}
            for r in report.filter(pl.col("op").is_in(["all", "bmm", "linear"])).to_dicts()]
    rt = Runtime.load(path)
    for name, spec in sorted(data.device_specs(store).items()):
        ms = rt.kernel_latency("bmm", [8, 1024, 1024, 1024], spec)
        rows.append({"what": f"bmm 8x1024^3 on {name} (ms)", "value": ms})
    helper, hreport = train_help_model(store, PRESET.fast)
    helper.save(out / "nasbench201_latency")
    means = hreport.group_by("method", maintain_order=True).agg(pl.col("spearman").mean())
    rows += [{"what": f"NAS-Bench-201 meta_valid Spearman, {m}", "value": float(s)}
             for m, s in means.iter_rows()]
    log(f"kernel-latency models saved under {out}")
    return pl.DataFrame(rows).with_columns(pl.col("value").map_elements(
        lambda v: float(np.round(v, 4)), return_dtype=pl.Float64))
