"""Alibaba GPU trace 2025 (disaggregated DLRM serving, NSDI'25): one row per serving instance
with role, app, CPU/GPU/RDMA/memory/disk requests and limits, creation/scheduled/deletion
times (s; empty while unknown) -> `cluster_jobs` (limits, RDMA, disk in `extra`)."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.cluster import insert_jobs

NUMERIC = ["cpu_request", "cpu_limit", "gpu_request", "gpu_limit", "rdma_request", "rdma_limit",
           "memory_request", "memory_limit", "disk_request", "disk_limit",
           "max_instance_per_node", "creation_time", "scheduled_time", "deletion_time"]
COLUMNS = [("instance_sn", "instance_sn", "VARCHAR"), ("role", "role_", "VARCHAR"),
           ("app_name", "app_name", "VARCHAR")] + [(c, f"{c}_", "DOUBLE") for c in NUMERIC]
EXTRA = ["cpu_limit", "gpu_limit", "rdma_request", "rdma_limit", "memory_limit", "disk_request",
         "disk_limit", "max_instance_per_node"]


class AlibabaGPU2025(Adapter):
    name = "alibaba-gpu-v2025"
    table = "cluster_jobs"
    catalog = Catalog(
        format="CSV: " + ",".join(c[0] for c in COLUMNS),
        url="https://github.com/alibaba/clusterdata/tree/master/cluster-trace-gpu-v2025",
        license="Alibaba cluster trace terms (research use)",
        citation="Alibaba disaggregated DLRM inference trace, NSDI 2025",
    )

    def load(self, ctx, files: list[Path]):
        extra = ", ".join(f"'{c}', {c}_" for c in EXTRA)
        return insert_jobs(ctx, files, COLUMNS, {
            "job_id": "instance_sn", "role": "role_", "app": "app_name",
            "submit_s": "creation_time_", "start_s": "scheduled_time_",
            "end_s": "deletion_time_", "duration_s": "deletion_time_ - scheduled_time_",
            "num_instances": "1", "cpu_request": "cpu_request_",
            "memory_request": "memory_request_", "gpu_request": "gpu_request_",
            "extra": f"json_object({extra})",
        }, checks=[("job_id IS NULL", "missing instance_sn")])
