"""Orchestration, one room: pipelines that read the store, train and compare predictors and
write results, for `servecast demo`, the CLI and the dashboard.

- `demo`: `servecast demo` (ingest the shared data, run each area, summarize).
- `kernel_latency`, `interference`, `moe`: each area's fast train-and-compare step
  (`moe` also fits a `CongestionGame` from a small-MoE run: `fit_from_run`).

Pipelines sit above predictors and analytics; predictors never import them (an
import-linter contract in pyproject.toml).
"""
