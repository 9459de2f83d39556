"""Azure LLM inference traces (Splitwise, ISCA'24): TIMESTAMP,ContextTokens,GeneratedTokens.

The 2023 files have naive timestamps with 7 fractional digits; the 2024 week-long files carry
a UTC offset. `arrival_s` is seconds since the file's first request.
"""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.requests import (
    ONE_PASS_MIN_BYTES,
    insert_csv_direct,
    insert_requests,
    rebase_arrivals,
)
from servecast.datasets.staging import stage_csv

COLUMNS = [
    ("TIMESTAMP", "ts", "VARCHAR"),
    ("ContextTokens", "context_tokens", "DOUBLE"),  # DOUBLE: fractions rejected, not rounded
    ("GeneratedTokens", "generated_tokens", "DOUBLE"),
]

#: the one-pass read (`insert_csv_direct`): the reader parses the timestamps itself (a
#: string it cannot parse sends the file through the stage, which rejects that row)
DIRECT = [("TIMESTAMP", "ts", "TIMESTAMPTZ"), *COLUMNS[1:]]
SELECT = "context_tokens AS prompt_tokens, generated_tokens AS output_tokens"

#: the stage's checks beyond the token / time checks every request trace gets
CHECKS = [("arrival_s IS NULL", "TIMESTAMP is not a date-time")]


class AzureLLM(Adapter):
    name = "azure-llm"
    table = "llm_requests"
    catalog = Catalog(
        format="CSV: TIMESTAMP,ContextTokens,GeneratedTokens (2023; 2024 with UTC offset)",
        url="https://github.com/Azure/AzurePublicDataset/blob/master/AzureLLMInferenceDataset2023.md",
        license="CC-BY-4.0",
        citation="Patel et al., Splitwise: Efficient Generative LLM Inference Using Phase "
        "Splitting, ISCA 2024",
        download="https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/"
        "AzureLLMInferenceTrace_conv.csv",
    )

    def __init__(self, one_pass_bytes: int = ONE_PASS_MIN_BYTES):
        #: files of at least this many bytes are tried in one pass (`insert_csv_direct`)
        self.one_pass_bytes = one_pass_bytes

    def load(self, ctx, files: list[Path]):
        counts = {}
        for f in files:  # each file has its own time origin
            if ctx.one_pass(f) and f.stat().st_size >= self.one_pass_bytes:
                counts[f] = insert_csv_direct(ctx, f, DIRECT,
                                              f"epoch(ts) AS arrival_s, {SELECT}", CHECKS)
                continue
            stage_csv(ctx, [f], COLUMNS,
                      f"epoch(try_cast(ts AS TIMESTAMPTZ)) AS arrival_s, {SELECT}")
            rebase_arrivals(ctx, "_stage")
            counts |= insert_requests(ctx, "_stage", [f], checks=CHECKS)
        return counts
