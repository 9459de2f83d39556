"""Source-format adapters, registered by name (`servecast datasets` lists them)."""

from __future__ import annotations

from servecast.datasets.base import Adapter
from servecast.errors import UnknownNameError
from servecast.registry import modules

#: one module per source format (each defines one or more Adapter subclasses)
_MODULES = [
    "burstgpt", "azure_llm", "mooncake", "sharegpt", "length_stats",
    "alibaba_v2017", "alibaba_gpu_v2023", "alibaba_gpu_v2025", "philly", "helios",
    "azure_vm_noise", "neusight", "help_nasbench201", "vidur", "olmoe_routing",
    "aiconfigurator", "serving_bench", "kernel_profile", "ntua_interference",
    "user_log", "bench_results", "neusight_e2e", "mlperf", "host_metrics",
]


def adapters() -> dict[str, Adapter]:
    """Every registered adapter by name."""
    found: dict[str, Adapter] = {}
    for module in modules("servecast.datasets", _MODULES):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Adapter) and obj is not Adapter \
                    and obj.__module__ == module.__name__ and not obj.__name__.startswith("_"):
                found[obj.name] = obj()
    return found


def get_adapter(name: str) -> Adapter:
    """The adapter called `name` (raises UnknownNameError listing the known ones)."""
    table = adapters()
    if name not in table:
        raise UnknownNameError(
            f"unknown source {name!r}; known sources: {', '.join(sorted(table))}"
        )
    return table[name]
