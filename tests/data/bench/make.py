"""Regenerate the benchmark-result fixtures by running the real, pinned tools (GuideLLM
0.8.1 and AIPerf 0.13.0 from `.venv-tools`, `make tools`) against the loopback
OpenAI-compatible stub (benchmarks/_tools/openai_stub.py), with the local tokenizer and a
bounded request count; the stub fails every 5th request (HTTP 500) so that the files hold
failed requests too:

- guidellm_benchmarks.json: `guidellm run`, synchronous then constant 20/s, 6 requests each
- aiperf_profile_export.jsonl: `aiperf profile`, chat streaming, concurrency 2, 10 requests

Run: .venv/bin/python tests/data/bench/make.py [OUT_DIR] (about two minutes on two shared
cores; the files are committed; tests/test_bench_results.py reruns it, marked slow).
"""

from __future__ import annotations

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
        import json

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


def main(out: Path = HERE) -> None:
    """Write both fixtures into folder `out` (default: next to this script)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "_tools" / "openai_stub.py"),
           "--port", str(port), "--model", MODEL, "--fail-every", "5"]
    with background(cmd, f"{url}/health"):
        guidellm(url, out / "guidellm_benchmarks.json")
        aiperf(url, out / "aiperf_profile_export.jsonl")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
