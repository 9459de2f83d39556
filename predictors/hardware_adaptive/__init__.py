"""HELP-style hardware-adaptive latency prediction over NAS-Bench-201 (NeurIPS'21 protocol).

Research-only: it reproduces a benchmark protocol (meta-train on some devices, adapt to a new
one from 10 measured reference architectures) and does not follow the predictor contract
(`predictors.base.Predictor`): it has `meta_fit` / `adapt` / `evaluate(latencies,
architectures, devices)` instead of fit / predict, no runtime, and no Estimator kind. Its
saved directories still carry a model card (`SavedModel`), kind `nasbench201_latency`.
"""

RESEARCH_ONLY = True
