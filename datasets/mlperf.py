"""MLPerf Inference LLM results (MLCommons `inference_results_v*`, one row per submitter x
system x benchmark x scenario, parsed from each run's `mlperf_log_summary.txt` and system
JSON) -> `mlperf_results`.

Units: the CSV's nanoseconds become ms for TTFT / TPOT and their limits, seconds for the
end-to-end latencies (`mean_latency_s`, `p99_latency_s`); `accelerator_memory` ('80 GB',
'81559 MiB', 'N/A', 'Shared with host') becomes `accelerator_memory_gb`: the 'GB' sizes are
the vendors' nominal (binary) sizes as written, MiB / 1024; NULL when not a size.
`scenario` is stored as MLPerf names it ('Server', 'Offline', 'SingleStream',
'MultiStream') whatever its case in the file. Rows rejected: a missing submitter / system /
benchmark / scenario, an unknown scenario, a node count below 1, an accelerator count
neither >= 0 nor 'N/A' (a CPU-only system: stored NULL), a negative rate or latency, a
Server row with no target QPS, an Offline row with neither samples/s nor tokens/s.
"""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import file_counts, reject_invalid, stage_csv

NS_MS = ["mean_ttft", "p50_ttft", "p90_ttft", "p99_ttft", "mean_tpot", "p50_tpot", "p90_tpot",
         "p99_tpot", "ttft_limit", "tpot_limit"]
TEXT = ["round", "division", "submitter", "system", "benchmark", "scenario", "valid",
        "accelerator"]
COLUMNS = [*((c, c, "VARCHAR") for c in TEXT),
           ("accelerators_per_node", "accelerators_per_node", "VARCHAR"),
           ("nodes", "nodes", "INTEGER"), ("accelerator_memory", "accelerator_memory", "VARCHAR"),
           ("framework", "framework", "VARCHAR"),
           *((c, c, "DOUBLE") for c in ("samples_per_s", "tokens_per_s", "target_qps",
                                        "scheduled_qps", "mean_latency_ns", "p99_latency_ns")),
           *((f"{c}_ns", f"{c}_ns", "DOUBLE") for c in NS_MS)]
SCENARIOS = ("Server", "Offline", "SingleStream", "MultiStream")
RATES = ["samples_per_s", "tokens_per_s", "target_qps", "scheduled_qps", "mean_latency_ns",
         "p99_latency_ns", *(f"{c}_ns" for c in NS_MS)]

_MEMORY_GB = """CASE
    WHEN regexp_matches(accelerator_memory, '^\\s*[0-9.]+\\s*GB\\s*$')
      THEN CAST(regexp_extract(accelerator_memory, '[0-9.]+') AS DOUBLE)
    WHEN regexp_matches(accelerator_memory, '^\\s*[0-9.]+\\s*MiB\\s*$')
      THEN CAST(regexp_extract(accelerator_memory, '[0-9.]+') AS DOUBLE) / 1024
    END"""
_COUNT = "try_cast(accelerators_per_node AS INTEGER)"
_SCENARIO = "CASE lower(scenario) " + " ".join(
    f"WHEN '{s.lower()}' THEN '{s}'" for s in SCENARIOS) + " END"


class MLPerfResults(Adapter):
    name = "mlperf"
    table = "mlperf_results"
    catalog = Catalog(
        format="CSV: " + ",".join(c[0] for c in COLUMNS) + " (latencies in ns)",
        url="https://github.com/mlcommons/inference_results_v4.1",
        license="Apache-2.0",
        citation="Reddi et al., MLPerf Inference Benchmark, ISCA 2020; MLCommons Inference "
        "v4.1 results",
    )

    def load(self, ctx, files: list[Path]):
        stage_csv(ctx, files, COLUMNS)
        reject_invalid(ctx, "_stage", [
            ("submitter IS NULL OR system IS NULL OR benchmark IS NULL OR scenario IS NULL",
             "missing submitter, system, benchmark or scenario"),
            (f"scenario IS NOT NULL AND {_SCENARIO} IS NULL",
             "unknown scenario (use " + " / ".join(SCENARIOS) + ")"),
            ("nodes IS NULL OR nodes < 1", "missing or non-positive nodes"),
            (f"accelerators_per_node IS NULL OR {_COUNT} < 0 OR ({_COUNT} IS NULL AND "
             "accelerators_per_node <> 'N/A')",
             "accelerators_per_node is not a count >= 0 or N/A"),
            (" OR ".join(f"{c} < 0" for c in RATES), "negative rate or latency"),
            (f"{_SCENARIO} = 'Server' AND (target_qps IS NULL OR target_qps <= 0)",
             "Server row without a positive target_qps"),
            (f"{_SCENARIO} = 'Offline' AND samples_per_s IS NULL AND tokens_per_s IS NULL",
             "Offline row with neither samples_per_s nor tokens_per_s"),
        ])
        ms = ", ".join(f"{c}_ns / 1e6" for c in NS_MS)
        ctx.con.execute(
            f"""INSERT INTO mlperf_results SELECT ?, round, division, submitter, system,
                benchmark, {_SCENARIO}, valid, accelerator, {_COUNT}, nodes,
                {_MEMORY_GB}, framework, samples_per_s, tokens_per_s, target_qps,
                scheduled_qps, mean_latency_ns / 1e9, p99_latency_ns / 1e9, {ms}
                FROM _stage""", [ctx.trace])
        return file_counts(ctx, "_stage", files)
