"""Prompt/decode token-count tables (Sarathi-Serve, Vidur `data/processed_traces/`):
num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio. No arrival times."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.requests import insert_requests
from servecast.datasets.staging import stage_csv

COLUMNS = [
    ("num_prefill_tokens", "prefill", "DOUBLE"),  # DOUBLE: fractions rejected, not rounded
    ("num_decode_tokens", "decode", "DOUBLE"),
    ("num_total_tokens", "total", "DOUBLE"),
    ("pd_ratio", "pd_ratio", "DOUBLE"),
]


class LengthStats(Adapter):
    name = "length-stats"
    table = "llm_requests"
    catalog = Catalog(
        format="CSV: " + ",".join(c[0] for c in COLUMNS),
        url="https://github.com/microsoft/vidur/tree/main/data/processed_traces",
        license="MIT (Vidur) / Apache-2.0 (Sarathi-Serve)",
        citation="Agrawal et al., Vidur: A Large-Scale Simulation Framework for LLM Inference, "
        "MLSys 2024",
    )

    def load(self, ctx, files: list[Path]):
        stage_csv(ctx, files, COLUMNS, "prefill AS prompt_tokens, decode AS output_tokens, "
                  "total AS _total")
        return insert_requests(ctx, "_stage", files, drop=["_total"], checks=[
            ("_total <> prompt_tokens + output_tokens",
             "num_total_tokens is not prefill + decode"),
        ])
