"""BurstGPT (HPMLL, KDD'25): ChatGPT/GPT-4 request logs on Azure OpenAI.

Schema v1: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type.
Schema v3 adds Session ID and Elapsed time. The schema is detected from the header;
`Timestamp` (s) is already relative to the trace start and kept as `arrival_s`.
Response tokens 0 marks a failed request.
"""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.requests import insert_requests
from servecast.datasets.staging import read_header, stage_csv
from servecast.errors import SchemaMismatchError

V1 = {
    "Timestamp": ("timestamp", "DOUBLE"),
    "Model": ("model", "VARCHAR"),
    "Request tokens": ("request_tokens", "DOUBLE"),  # DOUBLE: fractions rejected, not rounded
    "Response tokens": ("response_tokens", "DOUBLE"),
    "Total tokens": ("total_tokens", "DOUBLE"),
    "Log Type": ("log_type", "VARCHAR"),
}
V3 = {**V1, "Session ID": ("session_id", "VARCHAR"), "Elapsed time": ("elapsed", "DOUBLE")}


class BurstGPT(Adapter):
    name = "burstgpt"
    table = "llm_requests"
    catalog = Catalog(
        format=f"CSV v1: {','.join(V1)}; v3 adds Session ID, Elapsed time",
        url="https://github.com/HPMLL/BurstGPT/releases",
        license="CC-BY-4.0",
        citation="Wang et al., BurstGPT: A Real-World Workload Dataset to Optimize LLM "
        "Serving Systems, KDD 2025",
        download="https://github.com/HPMLL/BurstGPT/releases/download/v1.1/BurstGPT_1.csv",
    )

    def load(self, ctx, files: list[Path]):
        counts = {}
        for schema in (V1, V3):
            group = [f for f in files if self.schema_of(f) is schema]
            if not group:
                continue
            spec = {k.lower(): v for k, v in schema.items()}
            columns = [(h, *spec[h.lower()]) for h in read_header(group[0])]
            v3 = schema is V3
            select = (
                "timestamp AS arrival_s, model, log_type, request_tokens AS prompt_tokens, "
                "response_tokens AS output_tokens"
                + (", session_id, elapsed AS elapsed_s" if v3 else "")
            )
            stage_csv(ctx, group, columns, select)
            counts |= insert_requests(ctx, "_stage", group, checks=[
                ("arrival_s IS NULL", "missing Timestamp"),
            ])
        return counts

    @staticmethod
    def schema_of(path: Path) -> dict:
        found = read_header(path)
        names = {h.lower() for h in found}
        for schema in (V1, V3):
            if names == {k.lower() for k in schema}:
                return schema
        raise SchemaMismatchError(
            str(path), list(V1), found,
            "BurstGPT files have the v1 columns (v3: plus Session ID, Elapsed time)",
        )
