"""Sessions (multi-turn conversations): turns per session, inter-turn gaps (s) and how the
prompt grows across turns (ShareGPT conversations, BurstGPT v3 sessions).

Turns come from `turn` where the source has it, else from arrival order within the session.
`context_tokens` of a turn is everything a stateless server re-reads: all earlier prompts
and outputs of the session plus the turn's own prompt (tokens).
"""

from __future__ import annotations

import polars as pl

from servecast.analytics.source import source

_TURNS = """
    SELECT session_id, arrival_s, prompt_tokens, output_tokens,
           coalesce(turn, row_number() OVER (PARTITION BY session_id
                                             ORDER BY arrival_s, request_id)) AS turn_no
    FROM t WHERE session_id IS NOT NULL"""

_CONTEXT = f"""
    SELECT *, sum(prompt_tokens + output_tokens) OVER w - output_tokens AS context_tokens,
           arrival_s - lag(arrival_s) OVER w AS gap_s
    FROM ({_TURNS})
    WINDOW w AS (PARTITION BY session_id ORDER BY turn_no ROWS UNBOUNDED PRECEDING)"""


def has_sessions(src, trace: str | None = None) -> bool:
    """Whether the trace carries session ids."""
    return source(src, trace, "llm_requests").has_values("session_id")


def session_summary(src, trace: str | None = None) -> dict:
    """sessions, requests_in_sessions, multi_turn_share, turns_mean / p50 / p90 / max,
    gap_p50_s / gap_p90_s / gap_mean_s (None without arrival times)."""
    s = source(src, trace, "llm_requests")
    row = s.sql(f"""
        WITH c AS ({_CONTEXT}),
        per AS (SELECT session_id, count(*) AS turns FROM c GROUP BY session_id)
        SELECT (SELECT count(*) FROM per) AS sessions,
               (SELECT sum(turns) FROM per)::BIGINT AS requests_in_sessions,
               (SELECT avg((turns > 1)::INT) FROM per) AS multi_turn_share,
               (SELECT avg(turns) FROM per) AS turns_mean,
               (SELECT quantile_cont(turns, 0.5) FROM per) AS turns_p50,
               (SELECT quantile_cont(turns, 0.9) FROM per) AS turns_p90,
               (SELECT max(turns) FROM per) AS turns_max,
               (SELECT quantile_cont(gap_s, 0.5) FROM c) AS gap_p50_s,
               (SELECT quantile_cont(gap_s, 0.9) FROM c) AS gap_p90_s,
               (SELECT avg(gap_s) FROM c) AS gap_mean_s""").row(0, named=True)
    return row


def turns_distribution(src, trace: str | None = None) -> pl.DataFrame:
    """Sessions by number of turns: turns, sessions, share."""
    s = source(src, trace, "llm_requests")
    return s.sql(f"""
        SELECT turns, count(*) AS sessions, count(*) / sum(count(*)) OVER () AS share
        FROM (SELECT session_id, count(*) AS turns FROM ({_TURNS}) GROUP BY session_id)
        GROUP BY turns ORDER BY turns""")


def prompt_growth(src, trace: str | None = None, max_turn: int = 20) -> pl.DataFrame:
    """Per turn number (1..max_turn): n, prompt_p50, prompt_mean, output_mean,
    context_p50, context_mean (tokens) and gap_p50_s (s since the previous turn)."""
    s = source(src, trace, "llm_requests")
    return s.sql(f"""
        SELECT turn_no AS turn, count(*) AS n,
               quantile_cont(prompt_tokens, 0.5) AS prompt_p50, avg(prompt_tokens) AS prompt_mean,
               avg(output_tokens) AS output_mean,
               quantile_cont(context_tokens, 0.5) AS context_p50,
               avg(context_tokens) AS context_mean, quantile_cont(gap_s, 0.5) AS gap_p50_s
        FROM ({_CONTEXT}) WHERE turn_no <= {int(max_turn)} GROUP BY turn_no ORDER BY turn_no""")
