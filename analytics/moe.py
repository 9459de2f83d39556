"""MoE expert-load imbalance analytics over `moe_expert_loads` (or any frame with its columns).

Metrics per (model, checkpoint, assignment, domain, layer), on the tokens routed to each
expert (x_e, E experts):
    maxvio        max_e x / mean x - 1 (0 = perfectly balanced)
    gini          Gini coefficient of x (0 balanced, -> 1 all on one expert)
    norm_entropy  entropy of the load shares / log E (1 balanced)
    cv            coefficient of variation std/mean (population std)
    max_min       max x / min x (NULL when an expert got no token)
    dead_experts  experts with zero tokens
Cross-domain: L1 distance between domains' load shares (`shares` feeds the leave-one-domain-out
prediction in `predictors.moe_congestion.domains.domain_transfer`).
"""

from __future__ import annotations

import duckdb
import polars as pl

from servecast.errors import InvalidInputError, UnknownNameError

KEYS = ["model", "checkpoint", "assignment", "domain", "layer"]
COLUMNS = [*KEYS, "expert", "tokens"]


def _relation(source, trace: str | None):
    """(connection, relation) of expert loads from a Store + trace, or a polars frame."""
    if isinstance(source, pl.DataFrame):
        missing = {"model", "layer", "expert", "tokens"} - set(source.columns)
        if missing:
            raise InvalidInputError(f"expert-load frame lacks column(s) {sorted(missing)}; "
                                    f"expected {', '.join(COLUMNS)}")
        frame = source.with_columns(
            [pl.lit(None, pl.Utf8).alias(c) for c in KEYS if c not in source.columns])
        con = duckdb.connect()
        con.register("_moe_src", frame.select(COLUMNS).to_arrow())
        return con, con.sql("SELECT * FROM _moe_src")
    if trace is None:
        raise InvalidInputError("pass the trace name of the expert loads")
    if source.table_of(trace) != "moe_expert_loads":
        raise UnknownNameError(f"trace {trace!r} holds {source.table_of(trace)} rows, not MoE "
                               "expert loads; ingest one with the olmoe-routing adapter")
    return source.con, source.rows(trace)


#: every expert 0..max(expert) of the model in every group; experts absent from the source
#: (e.g. Counters that omit zero) count as 0 tokens
DENSE = """
    dense AS (
        SELECT g.model, g.checkpoint, g.assignment, g.domain, g.layer, e.expert,
               coalesce(x.tokens, 0) AS tokens
        FROM (SELECT DISTINCT model, checkpoint, assignment, domain, layer FROM rel) g
        JOIN (SELECT model, unnest(range(max(expert) + 1)) AS expert FROM rel GROUP BY model) e
          ON g.model = e.model
        LEFT JOIN (SELECT model, checkpoint, assignment, domain, layer, expert,
                          sum(tokens) AS tokens FROM rel GROUP BY ALL) x
          ON x.model = g.model AND x.checkpoint IS NOT DISTINCT FROM g.checkpoint
         AND x.assignment IS NOT DISTINCT FROM g.assignment
         AND x.domain IS NOT DISTINCT FROM g.domain AND x.layer = g.layer
         AND x.expert = e.expert)"""


def imbalance(source, trace: str | None = None) -> pl.DataFrame:
    """Imbalance metrics per (model, checkpoint, assignment, domain, layer) (module docstring).

    source: a Store (with `trace`) or a frame [model, (checkpoint, assignment, domain), layer,
    expert, tokens]. Computed inside DuckDB.
    """
    _, rel = _relation(source, trace)
    part = "model, checkpoint, assignment, domain, layer"
    sql = f"""
        WITH {DENSE},
        r AS (
            SELECT {part}, expert, tokens::DOUBLE AS x,
                   row_number() OVER (PARTITION BY {part} ORDER BY tokens, expert) AS i,
                   count(*) OVER (PARTITION BY {part}) AS n,
                   sum(tokens::DOUBLE) OVER (PARTITION BY {part}) AS total
            FROM dense)
        SELECT {part}, any_value(n)::INTEGER AS experts, sum(x)::BIGINT AS tokens,
               max(x) / avg(x) - 1 AS maxvio,
               sum((2 * i - n - 1) * x) / (any_value(n) * sum(x)) AS gini,
               coalesce(-sum(CASE WHEN x > 0 THEN x / total * ln(x / total) END), 0)
                   / ln(any_value(n)) AS norm_entropy,
               stddev_pop(x) / avg(x) AS cv,
               CASE WHEN min(x) > 0 THEN max(x) / min(x) END AS max_min,
               count(*) FILTER (WHERE x = 0)::INTEGER AS dead_experts
        FROM r GROUP BY ALL HAVING sum(x) > 0 ORDER BY ALL"""
    return rel.query("rel", sql).pl()


def shares(source, trace: str | None = None) -> pl.DataFrame:
    """Load shares: frame [model, checkpoint, assignment, domain, layer, expert, tokens, share]."""
    _, rel = _relation(source, trace)
    sql = f"""WITH {DENSE}
             SELECT *, tokens / sum(tokens) OVER (PARTITION BY model, checkpoint, assignment,
             domain, layer) AS share FROM dense ORDER BY model, checkpoint, assignment, domain,
             layer, expert"""
    return rel.query("rel", sql).pl()


def domain_distances(source, trace: str | None = None) -> pl.DataFrame:
    """L1 distance between two domains' load shares per (model, checkpoint, assignment, layer):
    frame [..., layer, domain_a, domain_b, l1] with domain_a < domain_b; l1 in [0, 2]."""
    s = shares(source, trace)
    con = duckdb.connect()
    con.register("s", s.to_arrow())
    return con.sql("""
        SELECT a.model, a.checkpoint, a.assignment, a.layer, a.domain AS domain_a,
               b.domain AS domain_b, sum(abs(a.share - b.share)) AS l1
        FROM s a JOIN s b ON a.model = b.model AND a.assignment IS NOT DISTINCT FROM b.assignment
             AND a.checkpoint IS NOT DISTINCT FROM b.checkpoint AND a.layer = b.layer
             AND a.expert = b.expert AND a.domain < b.domain
        GROUP BY ALL ORDER BY ALL""").pl()
