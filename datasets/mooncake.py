"""Mooncake traces (Kimi, FAST'25): JSONL with `timestamp` (ms), `input_length`,
`output_length` and `hash_ids` (ids of 512-token prefix blocks). Each line is one request;
an optional `session_id` (AIPerf's multi-turn form, servecast's exports) is kept."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.requests import insert_requests, rebase_arrivals
from servecast.datasets.staging import stage_lines

V = "CASE WHEN json_valid(j) THEN j END"  # the line, where it parses


class Mooncake(Adapter):
    name = "mooncake"
    table = "llm_requests"
    patterns = ("*.jsonl", "*.jsonl.gz")
    catalog = Catalog(
        format="JSONL: {timestamp (ms), input_length, output_length, hash_ids: [int]"
        "[, session_id]}",
        url="https://github.com/kvcache-ai/Mooncake/tree/main/FAST25-release/traces",
        license="Apache-2.0",
        citation="Qin et al., Mooncake: Trading More Storage for Less Computation, FAST 2025",
        download="https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/"
        "traces/conversation_trace.jsonl",
    )

    def load(self, ctx, files: list[Path]):
        counts = {}
        for f in files:
            stage_lines(ctx, [f], f"""
                json_valid(j) AS _valid,
                TRY_CAST(json_extract({V}, '$.timestamp') AS DOUBLE) / 1000.0 AS arrival_s,
                TRY_CAST(json_extract({V}, '$.input_length') AS DOUBLE) AS prompt_tokens,
                TRY_CAST(json_extract({V}, '$.output_length') AS DOUBLE) AS output_tokens,
                TRY_CAST(json_extract({V}, '$.hash_ids') AS INTEGER[]) AS prefix_hashes,
                json_extract_string({V}, '$.session_id') AS session_id""")
            rebase_arrivals(ctx, "_stage")
            ctx.con.execute("DELETE FROM _stage WHERE _valid IS NULL")  # blank lines
            counts |= insert_requests(ctx, "_stage", [f], header_lines=0, checks=[
                ("NOT _valid", "line is not valid JSON"),
                ("arrival_s IS NULL", "missing or non-numeric timestamp"),
            ], drop=["_valid"])
        return counts
