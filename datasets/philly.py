"""Microsoft Philly (ATC'19) as re-published by Alibaba clusterdata / HeliosArtifact:
`philly_runtime.csv` (one job runtime in s per row) -> `cluster_jobs`;
`philly_node_sequence.csv` (time,active,total nodes per minute) -> `cluster_series`."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.cluster import insert_jobs
from servecast.datasets.series import insert_series

PHILLY = dict(
    url="https://github.com/msr-fiddle/philly-traces",
    license="CC-BY-4.0 (Philly traces) / MIT (HeliosArtifact)",
    citation="Jeon et al., Analysis of Large-Scale Multi-Tenant GPU Clusters for DNN Training "
    "Workloads, USENIX ATC 2019",
)


class PhillyRuntime(Adapter):
    name = "philly-runtime"
    table = "cluster_jobs"
    catalog = Catalog(format="CSV: runtime (seconds per job)", **PHILLY)

    def load(self, ctx, files: list[Path]):
        return insert_jobs(ctx, files, [("runtime", "runtime", "DOUBLE")],
                           {"duration_s": "runtime"},
                           checks=[("duration_s IS NULL", "missing runtime")])


class PhillyNodes(Adapter):
    name = "philly-nodes"
    table = "cluster_series"
    catalog = Catalog(format="CSV: time,active,total (nodes, per minute)", **PHILLY)

    def load(self, ctx, files: list[Path]):
        return insert_series(ctx, files, series="philly")
