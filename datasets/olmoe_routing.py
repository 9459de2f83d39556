"""MoE expert assignment counts (OLMoE repo `scripts/routing_output/`, re-encoded as CSV):
model,assignment,domain,layer,expert,tokens — tokens routed to each expert per layer/domain."""

from __future__ import annotations

from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import file_counts, reject_invalid, stage_csv

COLUMNS = [
    ("model", "model", "VARCHAR"),
    ("assignment", "assignment", "VARCHAR"),
    ("domain", "domain", "VARCHAR"),
    ("layer", "layer", "INTEGER"),
    ("expert", "expert", "INTEGER"),
    ("tokens", "tokens", "BIGINT"),
]


class OLMoERouting(Adapter):
    name = "olmoe-routing"
    table = "moe_expert_loads"
    per_file_traces = False
    catalog = Catalog(
        format="CSV: " + ",".join(c[0] for c in COLUMNS) + " (optional checkpoint column)",
        url="https://github.com/allenai/OLMoE/tree/main/scripts/routing_output",
        license="Apache-2.0",
        citation="Muennighoff et al., OLMoE: Open Mixture-of-Experts Language Models, 2024",
    )

    def load(self, ctx, files: list[Path]):
        stage_csv(ctx, files, COLUMNS)
        reject_invalid(ctx, "_stage", [
            ("model IS NULL", "missing model"),
            ("layer IS NULL OR layer < 0", "missing or negative layer"),
            ("expert IS NULL OR expert < 0", "missing or negative expert"),
            ("tokens IS NULL OR tokens < 0", "missing or negative token count"),
        ])
        counts = file_counts(ctx, "_stage", files)
        ctx.con.execute(
            """INSERT INTO moe_expert_loads
               (trace, model, assignment, domain, layer, expert, tokens)
               SELECT ?, model, assignment, domain, layer, expert, tokens FROM _stage""",
            [ctx.trace])
        return counts
