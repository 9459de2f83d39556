"""servecast: LLM-serving and GPU-cluster workload traces -> characterizations and learned
performance estimates for schedulers."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Estimator", "Store", "__version__"]


def __getattr__(name: str):
    # lazy, so `from servecast import Estimator` never imports DuckDB
    if name == "Estimator":
        from servecast.estimator import Estimator

        return Estimator
    if name == "Store":
        from servecast.store import Store

        return Store
    raise AttributeError(name)
