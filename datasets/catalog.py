"""The shared real-data folder (`../shared/datasets` or `$SERVECAST_DATA`): which adapter
reads which sub-path, and the trace name it gets. Used by `servecast demo`, the tests and
the benchmarks (`ingest_shared`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from servecast.config import data_dir

#: (adapter, path relative to the data folder, trace name; None = one trace per file)
SHARED: list[tuple[str, str, str | None]] = [
    ("azure-llm", "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv", "azure_code"),
    ("azure-llm", "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "azure_conv"),
    ("burstgpt", "llm/burstgpt", "burstgpt_head54"),
    ("mooncake", "llm/mooncake", "mooncake_conversation"),
    ("sharegpt", "llm/sharegpt", "sharegpt"),
    ("length-stats", "llm/length_stats/sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
     "lengths_sharegpt"),
    ("length-stats", "llm/length_stats/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
     "lengths_arxiv"),
    ("alibaba-v2017", "cluster/alibaba_v2017", "alibaba_v2017"),
    ("alibaba-gpu-v2023", "cluster/alibaba_gpu_v2023", "alibaba_gpu_v2023"),
    ("alibaba-gpu-v2025", "cluster/alibaba_gpu_v2025", "alibaba_gpu_v2025"),
    ("philly-runtime", "cluster/philly/philly_runtime.csv", "philly_runtime"),
    ("philly-nodes", "cluster/philly/philly_node_sequence.csv", "philly_nodes"),
    ("helios", "cluster/helios_earth", "helios_earth"),
    ("azure-vm-noise", "vm/azure_vm_noise", "azure_vm_noise"),
    ("neusight", "gpu/neusight", "neusight"),
    ("help-nasbench201", "gpu/help_nasbench201", "help_nasbench201"),
    ("vidur-mlp", "gpu/vidur_profiling", "vidur_mlp"),
    ("olmoe-routing", "moe/olmoe_routing", "olmoe_routing"),
    ("aiconfigurator", "gpu/aiconfigurator", "aiconfigurator"),
    ("llm-inference-bench", "serving/llm_inference_bench", "llm_inference_bench"),
    ("splitwise-perf", "serving/splitwise", "splitwise_perf"),
    ("ntua-interference", "vm/ntua_interference", "ntua_interference"),
    ("neusight-e2e", "gpu/neusight_e2e", "neusight_e2e"),
    ("mlperf", "serving/mlperf", "mlperf_v4_1"),
]


#: shared folders no adapter reads yet; an issue that adds the adapter moves its folder from
#: here into SHARED (the catalog test guards every other file of the shared folder)
AWAITING_ADAPTERS: list[str] = []


def shared_path(rel: str, root: Path | None = None) -> Path:
    """Absolute path of `rel` inside the shared data folder."""
    return (root or data_dir()) / rel


def ingest_shared(store: Any, traces: Iterable[str] | None = None, root: Path | None = None,
                  each: Callable[[str, str, Any, float], None] | None = None) -> None:
    """Ingest into `store` (a `servecast.store.Store`) the `SHARED` entries whose trace is in
    `traces` (every entry when None), read from `root` (default: the shared data folder).
    Ingest is idempotent: files already in the store are skipped. After each entry,
    `each(source, trace, result, seconds)` is called with the store's `IngestResult`.
    The one place tests, benchmarks and the demo build a store of the shared data."""
    wanted = None if traces is None else set(traces)
    for source, rel, trace in SHARED:
        if wanted is not None and trace not in wanted:
            continue
        t0 = time.perf_counter()
        result = store.ingest(source, [shared_path(rel, root)], trace=trace)
        if each is not None:
            each(source, trace, result, time.perf_counter() - t0)
