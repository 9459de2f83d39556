"""Collectors: measure data on this machine, in a format an adapter ingests into the store.

- `host_metrics`: host and process metrics while a target runs alone and beside co-runners
  (`servecast collect-host-metrics`, `servecast collect-interference`), labelled windows for
  the interference predictor.
- `kernel_profiler`: operator latencies on the local CPU or GPU in the `kernel_latencies`
  columns (`servecast profile-kernels --out FILE.csv`), ingested with
  `servecast ingest kernel-profile FILE.csv`.
- `moe_routing`: `RoutingRecorder`, forward hooks recording the router logits, top-k
  choices and expert loads of an MoE model (the small-MoE workload run records with it).

Collectors sit beside the adapters: they import no predictor, analytics or front-end code
(an import-linter contract in pyproject.toml), except the kernel op vocabulary the profiler
measures.
"""
