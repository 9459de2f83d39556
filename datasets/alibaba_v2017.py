"""Alibaba cluster-trace-v2017 `batch_task`: task_create_time, task_end_time (s), job_id,
task_id, number_of_instances, status, CPUs requested per instance (100 = 1 core), normalized
memory per instance. One row per task -> `cluster_jobs`; an end time of 0 marks a task
still running at the end of the trace (end and duration NULL)."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.cluster import insert_jobs

COLUMNS = [
    ("task_create_time", "create_t", "DOUBLE"), ("task_end_time", "end_t", "DOUBLE"),
    ("job_id", "job", "VARCHAR"), ("task_id", "task", "VARCHAR"),
    ("number_of_instances", "instances", "BIGINT"), ("status", "status", "VARCHAR"),
    ("number_of_cpus_requested_per_instance_in_the_task", "cpus", "DOUBLE"),
    ("normalized_memory_requested_per_instance_in_the_task", "mem", "DOUBLE"),
]


class AlibabaV2017(Adapter):
    name = "alibaba-v2017"
    table = "cluster_jobs"
    catalog = Catalog(
        format="CSV batch_task: " + ",".join(c[0] for c in COLUMNS),
        url="https://github.com/alibaba/clusterdata/tree/master/cluster-trace-v2017",
        license="Alibaba cluster trace terms (research use)",
        citation="Lu et al., Imbalance in the Cloud: an Analysis on Alibaba Cluster Trace, "
        "BigData 2017",
    )

    def load(self, ctx, files: list[Path]):
        return insert_jobs(ctx, files, COLUMNS, {
            "job_id": "job", "task_id": "task", "status": "trim(status)",
            "submit_s": "create_t", "start_s": "create_t", "end_s": "nullif(end_t, 0)",
            "duration_s": "nullif(end_t, 0) - create_t", "num_instances": "instances",
            "cpu_request": "cpus / 100.0", "memory_request": "mem",
        }, checks=[("job_id IS NULL", "missing job_id")])
