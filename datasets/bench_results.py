"""Per-request results of the serving benchmarks users run, as `llm_requests` with latencies:

- `vllm-bench`: the result JSON of `vllm bench serve --save-result --save-detailed` (one
  document, or one per run with `--append-result`; parallel lists `input_lens`,
  `output_lens`, `ttfts`, `itls`, `errors` and, in newer vLLM, `latencies`, `start_times`,
  `queue_times`, `generated_texts`, and `server_queue_times` / `server_ttfts` when the
  server reports them; seconds, where the summary keys `*_ms` are milliseconds). Each run
  is a `log_type`: its `--label`, else `request_rate=R max_concurrency=C`; the generated
  text lands in `response_text`. SGLang's `bench_serving --output-details` writes the same
  lists (no latencies or start times; `--tag` for the label) and reads the same way.
- `guidellm`: GuideLLM's `benchmarks.json` (0.8.x report: `benchmarks[].requests.
  {successful, errored, incomplete}[]`, one trace of every benchmark in the file, the
  strategy as `log_type`; times in s, TTFT / ITL in ms).
- `aiperf`: AIPerf's `profile_export.jsonl` (0.13.x: one record a line, `metadata` with
  ns timestamps and `metrics.<name>.{value, unit}`).

Latencies land in seconds: elapsed_s end to end, ttft_s, tpot_s the mean gap between output
tokens after the first; queue_s is the server's queueing time where vLLM has it
(`server_queue_times`), else NULL (vLLM's `queue_times` is the wait for a client
concurrency slot before the request is sent, and `server_ttfts` is not kept: ttft_s is the
client's); `failed` is a request the tool recorded as errored or cancelled (vLLM's zero
latencies of a failed request are left NULL). `arrival_s` is seconds since the file's first
request start (when it was sent; vLLM's `start_times` are the client machine's monotonic
clock, so runs appended on one machine keep their spacing). In the JSON documents a
rejected row's line is the request's position in the file (1-based).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.requests import insert_requests, rebase_arrivals
from servecast.datasets.staging import enum_of, number_rows, stage_lines
from servecast.errors import DataFileError

#: seconds per unit of an AIPerf metric
_SECONDS = "CASE {u} WHEN 's' THEN 1 WHEN 'ms' THEN 1e3 WHEN 'us' THEN 1e6 WHEN 'ns' THEN 1e9 END"


def _document(f: Path) -> str:
    """SQL (one row, column `d`) reading JSON document `f` whole (DuckDB's reader buffers
    about twice `maximum_object_size`: sized to the file, not to the 2 GB maximum)."""
    size = min(f.stat().st_size + 4096, 2**31 - 1)
    return f"""(SELECT json AS d FROM read_json_objects({_lit(f)}, format='unstructured',
                maximum_object_size={size}))"""


def _lit(p) -> str:
    return "'" + str(p).replace("'", "''") + "'"


def stage_document(ctx, f: Path, query: str, what: str) -> None:
    """Run `query` (rows of `f` in file order) into temp table `_stage`, numbered by row."""
    try:
        ctx.con.execute(f"""CREATE OR REPLACE TEMP TABLE _stage AS
                            SELECT *, {_lit(f)}::{enum_of([f])} AS filename FROM ({query})""")
    except duckdb.Error as e:
        raise DataFileError(f"{f}: cannot be read as {what} ({str(e).splitlines()[0]}); "
                            "check the file against `servecast datasets`") from None
    number_rows(ctx, "_stage")


class _BenchResults(Adapter):
    table = "llm_requests"

    def load(self, ctx, files: list[Path]):
        counts = {}
        for f in files:  # each file has its own time origin
            self.stage(ctx, f)
            rebase_arrivals(ctx, "_stage")
            counts |= insert_requests(ctx, "_stage", [f], header_lines=0, checks=self.checks,
                                      failed="_failed", drop=["_failed", *self.helpers])
        return counts

    checks: list[tuple[str, str]] = []
    helpers: list[str] = []

    def stage(self, ctx, f: Path) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class VLLMBench(_BenchResults):
    name = "vllm-bench"
    patterns = ("*.json",)
    line_records = False  # SGLang names its file .jsonl: one result (many requests) a line
    catalog = Catalog(
        format="JSON of `vllm bench serve --save-result --save-detailed` (one result, or "
        "one a line with --append-result): input_lens, output_lens, ttfts, itls, errors"
        "[, latencies, start_times, generated_texts, server_queue_times] (s); also "
        "SGLang's bench_serving --output-details",
        url="https://docs.vllm.ai/en/latest/cli/bench/serve.html",
        license="Apache-2.0 (vLLM); the results are yours",
        citation="Kwon et al., Efficient Memory Management for Large Language Model Serving "
        "with PagedAttention (vLLM), SOSP 2023",
    )
    #: per-request lists every detailed result has, and those newer vLLM adds
    lists = ["input_lens", "output_lens", "ttfts", "itls", "errors"]
    optional = ["latencies", "start_times", "queue_times", "generated_texts",
                "server_queue_times", "server_ttfts"]

    def stage(self, ctx, f: Path) -> None:
        runs = f"(SELECT row_number() OVER () AS run, d FROM {_document(f)})"
        keys = self.lists + self.optional
        try:
            found = ctx.con.execute(
                "SELECT run, json_keys(d), " + ", ".join(
                    f"json_array_length(d, '$.{k}')" for k in keys) + f" FROM {runs} "
                "ORDER BY run").fetchall()
        except duckdb.Error as e:
            raise DataFileError(f"{f}: not a JSON document ({str(e).splitlines()[0]})") \
                from None
        for run, present, *sizes in found:
            where = f"{f}: result {run} of {len(found)}" if len(found) > 1 else f"{f}"
            missing = [k for k in self.lists if k not in (present or [])]
            if missing:
                raise DataFileError(
                    f"{where}: no per-request lists {', '.join(missing)}: not a vLLM bench "
                    "result saved with --save-detailed (run `vllm bench serve "
                    "--save-result --save-detailed`)")
            given = [(k, n) for k, n in zip(keys, sizes, strict=True) if n is not None]
            if len({n for _, n in given}) > 1:
                shown = ", ".join(f"{k} {n}" for k, n in given)
                raise DataFileError(f"{where}: the per-request lists differ in length "
                                    f"({shown}); the file was cut or edited: save the result "
                                    "again")

        def lst(key: str, typ: str = "DOUBLE[]") -> str:
            return f"unnest(TRY_CAST(json_extract(d, '$.{key}') AS {typ}))"

        run_name = ("coalesce(d->>'$.label', d->>'$.tag', 'request_rate=' || "
                    "(d->>'$.request_rate') || coalesce(' max_concurrency=' || "
                    "(d->>'$.max_concurrency'), ''))")
        unpacked = f"""SELECT {lst('input_lens')} AS prompt_tokens,
                   {lst('output_lens')} AS output_tokens, {lst('ttfts')} AS ttft_s,
                   {lst('itls', 'DOUBLE[][]')} AS itl, {lst('errors', 'VARCHAR[]')} AS error,
                   {lst('latencies')} AS latency, {lst('start_times')} AS arrival_s,
                   {lst('server_queue_times')} AS queue_s,
                   {lst('generated_texts', 'VARCHAR[]')} AS response_text,
                   unnest(range(json_array_length(d, '$.input_lens')::BIGINT)) AS i,
                   d->>'$.model_id' AS model, {run_name} AS log_type, run
            FROM {runs}"""
        stage_document(ctx, f, f"""
            SELECT prompt_tokens, output_tokens, arrival_s,
                   CASE WHEN NOT _failed THEN ttft_s END AS ttft_s,
                   CASE WHEN NOT _failed THEN coalesce(latency, ttft_s + list_sum(itl))
                        END AS elapsed_s,
                   CASE WHEN _failed THEN NULL
                        WHEN latency IS NOT NULL AND output_tokens > 1
                        THEN (latency - ttft_s) / (output_tokens - 1)
                        ELSE list_avg(itl) END AS tpot_s,
                   CASE WHEN NOT _failed THEN queue_s END AS queue_s,
                   nullif(response_text, '') AS response_text, model, log_type,
                   nullif(error, '') AS error, _failed
            FROM (SELECT *, coalesce(error, '') <> '' AS _failed FROM ({unpacked}))
            ORDER BY run, i""", "a vLLM bench result")


class GuideLLM(_BenchResults):
    name = "guidellm"
    patterns = ("*.json",)
    catalog = Catalog(
        format="GuideLLM benchmarks.json (0.8.x): benchmarks[].requests.{successful, "
        "errored, incomplete}[] with request_start_time, request_latency (s), "
        "time_to_first_token_ms, inter_token_latency_ms, prompt_tokens, output_tokens",
        url="https://github.com/vllm-project/guidellm",
        license="Apache-2.0 (GuideLLM); the results are yours",
        citation="GuideLLM, vLLM project (Red Hat / Neural Magic)",
    )

    def stage(self, ctx, f: Path) -> None:
        requests = ("list_concat(json_extract(b, '$.requests.successful[*]'), "
                    "json_extract(b, '$.requests.errored[*]'), "
                    "json_extract(b, '$.requests.incomplete[*]'))")
        stage_document(ctx, f, f"""
            SELECT TRY_CAST(r->>'$.request_start_time' AS DOUBLE) AS arrival_s,
                   TRY_CAST(r->>'$.prompt_tokens' AS DOUBLE) AS prompt_tokens,
                   coalesce(TRY_CAST(r->>'$.output_tokens' AS DOUBLE), 0) AS output_tokens,
                   TRY_CAST(r->>'$.request_latency' AS DOUBLE) AS elapsed_s,
                   TRY_CAST(r->>'$.time_to_first_token_ms' AS DOUBLE) / 1e3 AS ttft_s,
                   TRY_CAST(r->>'$.inter_token_latency_ms' AS DOUBLE) / 1e3 AS tpot_s,
                   r->>'$.info.status' AS status, r->>'$.info.error' AS error,
                   r->>'$.info.conversation_id' AS session_id,
                   TRY_CAST(r->>'$.info.turn_index' AS INTEGER) AS turn,
                   json_extract_string(r->>'$.request_args', '$.body.model') AS model,
                   strategy AS log_type,
                   coalesce(r->>'$.info.status', '') <> 'completed' AS _failed
            FROM (SELECT b->>'$.config.strategy.type_' AS strategy, unnest({requests}) AS r
                  FROM (SELECT unnest(json_extract(d, '$.benchmarks[*]')) AS b
                        FROM {_document(f)}))""", "a GuideLLM benchmarks.json")
        (n,) = ctx.con.execute("SELECT count(*) FROM _stage").fetchall()[0]
        if not n:
            raise DataFileError(f"{f}: no benchmarks[].requests in this file: not a GuideLLM "
                                "benchmarks.json (guidellm run --output kind=json,path=...)")


class AIPerf(_BenchResults):
    name = "aiperf"
    patterns = ("profile_export.jsonl", "*profile_export*.jsonl")
    catalog = Catalog(
        format="AIPerf profile_export.jsonl (0.13.x): {metadata: {request_start_ns, "
        "request_end_ns, conversation_id, turn_index, was_cancelled}, metrics: "
        "{request_latency, time_to_first_token, inter_token_latency, input_sequence_length, "
        "output_sequence_length (error_isl when failed): {value, unit}}, error}",
        url="https://github.com/ai-dynamo/aiperf",
        license="Apache-2.0 (AIPerf); the results are yours",
        citation="AIPerf, NVIDIA AI Dynamo",
    )
    checks = [("NOT _valid", "line is not valid JSON"),
              ("_bad_unit", "a latency metric has a unit other than s, ms, us or ns")]
    helpers = ["_valid", "_bad_unit"]

    def stage(self, ctx, f: Path) -> None:
        v = "CASE WHEN json_valid(j) THEN j END"

        def metric(name: str, seconds: bool = False) -> str:
            value = f"TRY_CAST(json_extract_string({v}, '$.metrics.{name}.value') AS DOUBLE)"
            if not seconds:
                return value
            unit = _SECONDS.format(u=f"json_extract_string({v}, '$.metrics.{name}.unit')")
            return f"{value} / {unit}"

        latencies = ["request_latency", "time_to_first_token", "inter_token_latency"]
        bad_unit = " OR ".join(
            f"(json_exists({v}, '$.metrics.{m}') AND {metric(m, True)} IS NULL "
            f"AND {metric(m)} IS NOT NULL)" for m in latencies)
        error = f"json_extract({v}, '$.error')"
        stage_lines(ctx, [f], f"""
            json_valid(j) AS _valid,
            TRY_CAST(json_extract_string({v}, '$.metadata.request_start_ns') AS DOUBLE) / 1e9
                AS arrival_s,
            coalesce({metric('input_sequence_length')}, {metric('usage_prompt_tokens')},
                     {metric('error_isl')}) AS prompt_tokens,
            coalesce({metric('output_sequence_length')}, {metric('usage_completion_tokens')},
                     CASE WHEN {error} IS NOT NULL THEN 0 END) AS output_tokens,
            {metric('request_latency', True)} AS elapsed_s,
            {metric('time_to_first_token', True)} AS ttft_s,
            {metric('inter_token_latency', True)} AS tpot_s,
            json_extract_string({v}, '$.metadata.conversation_id') AS session_id,
            TRY_CAST(json_extract_string({v}, '$.metadata.turn_index') AS INTEGER) AS turn,
            json_extract_string({v}, '$.metadata.benchmark_phase') AS log_type,
            CASE WHEN {error} IS NOT NULL AND json_type({error}) <> 'NULL'
                 THEN coalesce(json_extract_string({error}, '$.message'),
                               {error}::VARCHAR) END AS error,
            coalesce(({error} IS NOT NULL AND json_type({error}) <> 'NULL')
                     OR json_extract({v}, '$.metadata.was_cancelled')::BOOLEAN, false)
                AS _failed,
            coalesce({bad_unit}, false) AS _bad_unit""")
        ctx.con.execute("DELETE FROM _stage WHERE _valid IS NULL")  # blank lines
