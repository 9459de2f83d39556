"""Characterization pipelines (arrivals, fits, lengths, sessions, prefix_cache, failures,
cluster, vm_noise), the workload generator (synth) and batch reports (report, plots).

Every analysis takes a Store and a trace name (or a DuckDB relation) and returns polars
frames / JSON-ready dicts; SQL runs inside DuckDB (see `source.Source`)."""
