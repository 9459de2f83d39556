"""SenseTime Helios (SC'21) per-minute cluster series: `<vc>/cluster_sequence_vc.csv[.gz]` with
`time` then counters (jobs/GPUs running, pending, utilization, ...) -> `cluster_series`, one
series per virtual-cluster folder."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.series import insert_series


class Helios(Adapter):
    name = "helios"
    table = "cluster_series"
    per_file_traces = False
    catalog = Catalog(
        format="<vc>/cluster_sequence_vc.csv[.gz]: time,total_job_num,running_job_num,...,"
        "gpu_utilization,... (per minute)",
        url="https://github.com/S-Lab-System-Group/HeliosData",
        license="MIT",
        citation="Hu et al., Characterization and Prediction of Deep Learning Workloads in "
        "Large-Scale GPU Datacenters (Helios), SC 2021",
    )

    def load(self, ctx, files: list[Path]):
        counts = {}
        for f in files:
            counts |= insert_series(ctx, [f], series=f.parent.name)
        return counts
