"""Azure VM Noise dataset (TUNA, EuroSys'25): benchmark results on D8s_v5/B8ms VMs over 483
days, in the hive layout `test_suite=/test_name=/vm_lifespan=/vm_region=/vm_sku=/unit=*.csv[.gz]`
with columns value,runtime,starttime,VM_id. Partition keys become columns; `unit` comes from
the file name (`unit=MiB_s.csv.gz`)."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import file_counts, reject_invalid, stage_csv

COLUMNS = [
    ("value", "value", "DOUBLE"),
    ("runtime", "runtime_s", "DOUBLE"),
    ("starttime", "start_time", "TIMESTAMP"),
    ("VM_id", "vm_id", "BIGINT"),
]
KEYS = ["test_suite", "test_name", "vm_lifespan", "vm_region", "vm_sku"]


class AzureVMNoise(Adapter):
    name = "azure-vm-noise"
    table = "vm_measurements"
    per_file_traces = False
    catalog = Catalog(
        format="hive folders test_suite=/test_name=/vm_lifespan=/vm_region=/vm_sku=/"
        "unit=NAME.csv[.gz], columns value,runtime,starttime,VM_id",
        url="https://github.com/Azure/AzurePublicDataset/tree/master/vm-noise-data",
        license="CC-BY-4.0",
        citation="Wang et al., TUNA: Tuning Unstable and Noisy Cloud Applications, EuroSys 2025",
    )

    def load(self, ctx, files: list[Path]):
        keys = ", ".join(
            f"regexp_extract(filename, '/{k}=([^/]+)/', 1) AS {k}" for k in KEYS)
        stage_csv(ctx, files, COLUMNS,
                  f"{keys}, regexp_extract(filename, 'unit=([^/]+?)\\.csv(\\.gz)?$', 1) AS unit, "
                  "vm_id, start_time, runtime_s, value")
        reject_invalid(ctx, "_stage", [
            ("value IS NULL", "missing value"),
            ("NOT isfinite(value)", "non-finite value"),
            ("NOT isfinite(runtime_s) OR runtime_s < 0", "non-finite or negative runtime"),
            ("vm_id IS NULL", "missing VM_id"),
            ("test_suite = '' OR test_name = ''",
             "path lacks test_suite=/test_name= folders (keep the hive layout)"),
        ])
        counts = file_counts(ctx, "_stage", files)
        ctx.con.execute(
            f"""INSERT INTO vm_measurements (trace, {', '.join(KEYS)}, unit, vm_id, start_time,
                runtime_s, value)
                SELECT ?, {', '.join(KEYS)}, unit, vm_id, start_time, runtime_s, value
                FROM _stage""", [ctx.trace])
        return counts
