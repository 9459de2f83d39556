"""ShareGPT conversations (JSON list of {id, conversations: [{from, value}]}).

Every human->assistant message pair is one request: prompt_text/response_text, session_id =
conversation id, turn = pair number (1-based); token counts by the offline cl100k_base
tokenizer (servecast.tokens). Copies cut off mid-record keep every complete conversation and
report the truncation as a rejected row.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from pathlib import Path

import duckdb

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.requests import insert_requests
from servecast.errors import DataFileError
from servecast.tokens import count_tokens

CONV_TYPE = "STRUCT(\"from\" VARCHAR, value VARCHAR)[]"
PROMPT_ROLES = ("human", "user")
REPLY_ROLES = ("gpt", "chatgpt", "assistant", "bing", "bard")


class ShareGPT(Adapter):
    name = "sharegpt"
    table = "llm_requests"
    patterns = ("*.json", "*.json.gz")
    catalog = Catalog(
        format="JSON: [{id, conversations: [{from: human|gpt, value}]}]",
        url="https://huggingface.co/datasets/anon8231489123/ShareGPT_Vicuna_unfiltered",
        license="as published (user-shared ChatGPT conversations; research use)",
        citation="ShareGPT; as used by Vicuna (Chiang et al., 2023) and vLLM benchmarks",
        download="https://huggingface.co/datasets/anon8231489123/ShareGPT_Vicuna_unfiltered/"
        "resolve/main/ShareGPT_V3_unfiltered_cleaned_split.json",
    )

    def load(self, ctx, files: list[Path]):
        counts = {}
        for f in files:
            with tempfile.TemporaryDirectory() as tmp:
                self._stage_conversations(ctx, f, Path(tmp))
            self._stage_pairs(ctx)
            counts |= insert_requests(ctx, "_stage", [f], header_lines=0, failed="false")
            # a truncation is reported as a rejected row of the file
            (rej,) = ctx.con.execute(
                "SELECT count(*) FROM rejected_rows WHERE trace = ? AND file = ?",
                [ctx.trace, str(f)]).fetchall()[0]
            counts[f] = (counts[f][0], rej)
        return counts

    def _stage_conversations(self, ctx, path: Path, tmp: Path) -> None:
        """Conversations -> temp table _conv(id, conversations, filename), file order."""
        sql = f"""CREATE OR REPLACE TEMP TABLE _conv AS SELECT id, conversations, ? AS filename
                  FROM read_json(?, format='{{fmt}}', columns={{{{'id': 'VARCHAR',
                  'conversations': '{CONV_TYPE}'}}}})"""
        # probe on a scratch connection: a failed statement would abort the ingest transaction
        try:
            duckdb.connect().execute(sql.format(fmt="array"), [str(path), str(path)])
        except duckdb.Error as e:
            first_error = str(e).split("\n")[0]
        else:
            ctx.con.execute(sql.format(fmt="array"), [str(path), str(path)])
            return
        records, line, why = _complete_records(path)
        if not records:
            raise DataFileError(
                f"{path}: line {line}: not a ShareGPT JSON list ({why or first_error}); "
                "expected [{id, conversations: [{from, value}]}]")
        jsonl = tmp / "complete.jsonl"
        with open(jsonl, "w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        try:
            duckdb.connect().execute(sql.format(fmt="newline_delimited"), [str(path), str(jsonl)])
        except duckdb.Error as e:
            raise DataFileError(f"{path}: records lack id/conversations ({e})") from None
        ctx.con.execute(sql.format(fmt="newline_delimited"), [str(path), str(jsonl)])
        ctx.con.execute(
            "INSERT INTO rejected_rows VALUES (?, ?, ?, ?, NULL)",
            [ctx.trace, str(path), line,
             f"file truncated or malformed after {len(records)} complete conversations "
             f"({why}); the complete ones were kept"])

    def _stage_pairs(self, ctx) -> None:
        """_conv -> _stage of canonical request columns (one row per prompt/reply pair)."""
        con = ctx.con
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _pairs AS
            WITH m AS (
                SELECT rowid AS conv, id, filename, unnest(conversations) AS msg,
                       generate_subscripts(conversations, 1) AS i
                FROM _conv)
            SELECT a.id AS session_id,
                   row_number() OVER (PARTITION BY a.conv ORDER BY a.i)::INTEGER AS turn,
                   a.msg.value AS prompt_text, b.msg.value AS response_text, a.filename
            FROM m a JOIN m b ON a.conv = b.conv AND b.i = a.i + 1
            WHERE lower(a.msg."from") IN {PROMPT_ROLES} AND lower(b.msg."from") IN {REPLY_ROLES}
            ORDER BY a.conv, a.i""")
        texts = con.sql("SELECT prompt_text, response_text FROM _pairs").to_arrow_table()
        import pyarrow as pa

        tokens = pa.table({  # noqa: F841 - scanned by DuckDB below
            "prompt_tokens": count_tokens(texts["prompt_text"].to_pylist()),
            "output_tokens": count_tokens(texts["response_text"].to_pylist()),
        })
        con.execute("""CREATE OR REPLACE TEMP TABLE _stage AS
                       SELECT p.session_id, p.turn, p.prompt_text, p.response_text,
                              t.prompt_tokens, t.output_tokens, p.filename
                       FROM _pairs p POSITIONAL JOIN tokens t""")
        ctx.row_base["_stage"] = {}


def _complete_records(path: Path) -> tuple[list[dict], int, str]:
    """The complete top-level records of a cut-off JSON list, the line where the first
    incomplete one starts, and why parsing stopped."""
    raw, why = path.read_bytes(), ""
    if path.name.endswith(".gz"):  # keep all that decompresses from a cut-off stream
        chunks = []
        while raw:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                chunks.append(d.decompress(raw))
            except zlib.error as e:
                why = f"corrupt compressed stream: {e}"
                break
            if not d.eof:
                why = "compressed stream ends early (file cut off)"
                break
            raw = d.unused_data  # a further gzip member, if any
        raw = b"".join(chunks)
    text = raw.decode("utf-8", errors="replace")
    dec = json.JSONDecoder()
    pos = text.find("[")
    if pos < 0:
        return [], 1, "no JSON list"
    pos += 1
    records = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            why = why or f"incomplete record: {e.msg}"
            break
        records.append(obj)
        pos = end
    return records, text.count("\n", 0, pos) + 1, why or "unexpected end of list"
