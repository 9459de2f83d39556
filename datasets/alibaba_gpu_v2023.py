"""Alibaba GPU cluster trace 2023 (FGD, ATC'23): `openb_pod_list_*.csv` (pods with CPU/GPU
milli-requests, creation/scheduled/deletion times in s) -> `cluster_jobs`;
`openb_node_list_*.csv` (node inventory) -> `cluster_nodes` (inventory = file name)."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog, stem
from servecast.datasets.cluster import insert_jobs
from servecast.datasets.staging import file_counts, read_header, reject_invalid, stage_csv
from servecast.errors import SchemaMismatchError

PODS = [
    ("name", "name", "VARCHAR"), ("cpu_milli", "cpu_milli", "DOUBLE"),
    ("memory_mib", "memory_mib", "DOUBLE"), ("num_gpu", "num_gpu", "DOUBLE"),
    ("gpu_milli", "gpu_milli", "DOUBLE"), ("gpu_spec", "gpu_spec", "VARCHAR"),
    ("qos", "qos", "VARCHAR"), ("pod_phase", "pod_phase", "VARCHAR"),
    ("creation_time", "creation_time", "DOUBLE"), ("deletion_time", "deletion_time", "DOUBLE"),
    ("scheduled_time", "scheduled_time", "DOUBLE"),
]
NODES = [
    ("sn", "sn", "VARCHAR"), ("cpu_milli", "cpu_milli", "DOUBLE"),
    ("memory_mib", "memory_mib", "DOUBLE"), ("gpu", "gpu", "INTEGER"),
    ("model", "model", "VARCHAR"),
]


class AlibabaGPU2023(Adapter):
    name = "alibaba-gpu-v2023"
    table = "cluster_jobs"
    per_file_traces = False
    catalog = Catalog(
        format="pods CSV: " + ",".join(c[0] for c in PODS) + "; nodes CSV: "
        + ",".join(c[0] for c in NODES),
        url="https://github.com/alibaba/clusterdata/tree/master/cluster-trace-gpu-v2023",
        license="Alibaba cluster trace terms (research use)",
        citation="Weng et al., Beware of Fragmentation: Scheduling GPU-Sharing Workloads with "
        "Fragmentation Gradient Descent, USENIX ATC 2023",
    )

    def load(self, ctx, files: list[Path]):
        pods, nodes = [], []
        for f in files:
            header = read_header(f)
            if header == [c[0] for c in PODS]:
                pods.append(f)
            elif header == [c[0] for c in NODES]:
                nodes.append(f)
            else:
                raise SchemaMismatchError(str(f), [c[0] for c in PODS], header,
                                          "pod lists have the columns above; node lists have "
                                          + ",".join(c[0] for c in NODES))
        counts = {}
        if pods:
            counts |= insert_jobs(ctx, pods, PODS, {
                "job_id": "name", "status": "pod_phase", "qos": "qos",
                "submit_s": "creation_time", "start_s": "scheduled_time",
                "end_s": "deletion_time", "duration_s": "deletion_time - scheduled_time",
                "num_instances": "1", "cpu_request": "cpu_milli / 1000.0",
                "memory_request": "memory_mib", "gpu_request": "num_gpu * gpu_milli / 1000.0",
                "gpu_model": "nullif(gpu_spec, '')",
            }, checks=[("job_id IS NULL", "missing pod name")])
        for f in nodes:
            stage_csv(ctx, [f], NODES)
            reject_invalid(ctx, "_stage", [
                ("sn IS NULL", "missing node sn"),
                ("cpu_milli < 0 OR memory_mib < 0 OR gpu < 0", "negative capacity"),
            ])
            counts |= file_counts(ctx, "_stage", [f])
            ctx.con.execute(
                """INSERT INTO cluster_nodes SELECT ?, sn, cpu_milli / 1000.0, memory_mib, gpu,
                   nullif(model, ''), ? FROM _stage""", [ctx.trace, stem(f)])
        return counts
