"""Run inside the pinned tools' venv (`.venv-tools`, the `tools_python` fixture): load
exported files with the tools' own dataset loaders and print what they read, as JSON.

    python tools_loaders.py aiperf TOKENIZER_DIR FILE
    python tools_loaders.py guidellm TOKENIZER_DIR FILE [CONVERSATION_ID_COLUMN]
    python tools_loaders.py guidellm-columns TOKENIZER_DIR FILE
    python tools_loaders.py batch JOBS_JSON

batch: several of the above in one process (the tools' imports paid once); JOBS_JSON maps a
name to [tool, args...]; prints {name: result}, or {name: {"error": traceback}} for a job
that raised (the other jobs still run).

aiperf: `MooncakeTraceDatasetLoader.load_dataset` parses and validates every line (the
pydantic `MooncakeTrace` model) and groups sessions; `convert_to_conversations` then builds
the prompts from the hash ids for the first sessions holding at most 9 turns (AIPerf decodes
10 or more in worker processes, which look the tokenizer up in the Hugging Face cache).
guidellm: `TraceDatasetDeserializer` with `kind: mooncake` over a `json_file` source, every
row iterated (each validated: ceil(input_length / 512) hash ids, non-negative counts).
guidellm-columns: a plain JSONL file (the vLLM custom dataset) read by GuideLLM's `json_file`
deserializer and resolved by its `GenerativeColumnMapper` with the mapping a user passes
(`prompt` -> text, `output_tokens` -> output token count).
Prompt lengths are counted with the given tokenizer (the loaders' own)."""

from __future__ import annotations

import json
import sys


def aiperf(tokenizer_dir: str, path: str) -> dict:
    from aiperf.common import random_generator
    from aiperf.common.tokenizer import Tokenizer
    from aiperf.dataset.generator.prompt import PromptGenerator
    from aiperf.dataset.loader.mooncake_trace import MooncakeTraceDatasetLoader

    random_generator.reset()  # each job starts from seed 0, as in a process of its own
    random_generator.init(0)
    tok = Tokenizer.from_pretrained(tokenizer_dir, resolve_alias=False)
    loader = MooncakeTraceDatasetLoader(
        filename=path, prompt_generator=PromptGenerator(prompts=None, prefix_prompts=None,
                                                        tokenizer=tok))
    data = loader.load_dataset()
    few, n = {}, 0
    for sid, traces in data.items():
        if n + len(traces) <= 9:
            few[sid], n = traces, n + len(traces)
    convs = loader.convert_to_conversations(few)
    return {
        "sessions": {sid: [[t.timestamp, t.input_length, t.output_length, t.hash_ids]
                           for t in traces] for sid, traces in data.items()},
        "turns": [{"session": c.session_id, "timestamp": t.timestamp,
                   "max_tokens": t.max_tokens,
                   "prompt_tokens": len(tok.encode(t.texts[0].contents[0]))}
                  for c in convs for t in c.turns],
    }


def guidellm(tokenizer_dir: str, path: str, conversation_column: str | None = None) -> dict:
    from guidellm.data.deserializers import trace_mooncake  # noqa: F401  registers the kind
    from guidellm.data.deserializers.trace_common import TraceDatasetDeserializer
    from guidellm.schemas.data.deserializers.file import FileDataArgs
    from guidellm.schemas.data.deserializers.trace_mooncake import MooncakeTraceFormatArgs
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = MooncakeTraceFormatArgs(source=FileDataArgs(kind="json_file", path=path),
                                     conversation_id_column=conversation_column)
    dataset = TraceDatasetDeserializer()(config, processor_factory=lambda: tok,
                                         random_seed=0)
    turns = []
    for row in dataset:
        graph = json.loads(row["conversation_turns"])
        for turn in graph["turns"]:
            cols = turn["columns"]
            turns.append({
                "relative_timestamp": cols.get("relative_timestamp_column", [None])[0],
                "output_tokens": cols.get("output_tokens_count_column", [None])[0],
                "prompt_tokens": len(tok.encode(cols["text_column"][0],
                                                add_special_tokens=False))})
    return {"turns": turns}


def guidellm_columns(tokenizer_dir: str, path: str) -> dict:
    from guidellm.data.deserializers.deserializer import DatasetDeserializerFactory
    from guidellm.data.preprocessors.mappers import GenerativeColumnMapper
    from guidellm.schemas.data.deserializers.file import FileDataArgs
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ds = DatasetDeserializerFactory.deserialize(
        config=FileDataArgs(kind="json_file", path=path), processor_factory=lambda: tok,
        random_seed=0)
    mapping = GenerativeColumnMapper.datasets_mappings(
        [ds], {"text_column": "prompt", "output_tokens_count_column": "output_tokens"})
    text = mapping[("text_column", 0)][0][1]
    out = mapping[("output_tokens_count_column", 0)][0][1]
    return {"rows": len(ds), "text_column": text, "output_column": out,
            "output_tokens": list(ds[out]),
            "prompt_chars": [len(x) for x in ds[text]]}


LOADERS = {"aiperf": aiperf, "guidellm": guidellm, "guidellm-columns": guidellm_columns}


def batch(jobs_json: str) -> dict:
    import traceback

    out = {}
    for name, (tool, *args) in json.loads(open(jobs_json).read()).items():
        try:
            out[name] = LOADERS[tool](*args)
        except Exception:  # reported per job: the test that reads it fails, not all of them
            out[name] = {"error": traceback.format_exc()}
    return out


if __name__ == "__main__":
    tool, args = sys.argv[1], sys.argv[2:]
    print(json.dumps({**LOADERS, "batch": batch}[tool](*args)))
