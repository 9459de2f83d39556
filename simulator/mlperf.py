"""Which MLPerf Inference LLM rows (`mlperf_results`) the simulator can model, and how:
documented rules only, nothing fitted and nothing system-specific by name, so the same
protocol runs on other rounds and GPUs.

Rules, in order (the first that fails is the row's `reason`):
0. the closed division (the open division may change the model: quantization, pruning);
1. benchmark: the name without its accuracy suffix (-99 / -99.9) is a known benchmark
   (BENCHMARKS: its model config and named workload);
2. scenario Server or Offline, at least one accelerator;
3. GPU: the accelerator name, lower-cased, without the vendor words (NVIDIA, AMD, Instinct)
   and without suffixes that are not part of a catalog name (memory size, NPS mode, power,
   CTS), must name a catalog GPU (`servecast gpus`: family token, e.g. h100, plus the form
   token sxm / pcie / nvl when present), and the row's memory must be within 5% of the
   catalog's (a memory variant the catalog lacks, e.g. GH200 144 GB, is not modelled);
4. engine family from the framework string: TensorRT -> trtllm, vLLM -> vllm; others
   (PyTorch reference code) have no engine model;
5. a Server row needs its TTFT and TPOT limits (GPT-J's Server rows carry none).
The deployment: dtype fp8 where the GPU spec has an FP8 peak, else bf16, and with fp8 an
fp8 KV cache (`kv_cache_dtype fp8`, which both engine families document and which Server
submissions need: their measured decode concurrency, QPS x mean output x mean TPOT by
Little's law, exceeds what a 2-byte KV cache holds; docs/results.md); TP the smallest of
1, 2, 4, 8 (at most the accelerators per node, dividing the system's accelerators) at which
the weights fit and the KV cache holds ROOM_REQUESTS requests of the workload's longest
length, the cache sized the same way for every family (TP_KV_RULE: a headroom rule, not
the deployment's own cache; sized by the family's rule with the fp8 cache it picks TP 1
for GPT-J on L40S and Llama-2-70B on H100-NVL, and the development rows' Offline and max
QPS errors grow, docs/results.md); replicas = accelerators / TP (random routing).
max_num_seqs = MAX_SEQS: the KV cache and the token budget bound the batch (Offline, and
the default a Server deployment's tuning starts from: `simulator.max_batch` picks the cap of
the highest SLO-compliant capacity, as submitters tune their engine's maximum batch size).
The engine family sizes the KV cache (`deployment.KV_OF_FREE_MEMORY`: TensorRT-LLM's share
of the memory left after the weights, vLLM's share of the whole memory).

The run length (MLPerf's LoadGen rules, mlcommons/inference `loadgen/mlperf.conf`:
`*.Server.min_duration = 600000`, `*.Offline.min_duration = 600000` ms,
`<benchmark>.Offline.min_query_count`; `loadgen/test_settings.h`: `min_query_count = 100`
by default). Every simulated run lasts what a submitted one must, so the replica reaches
the steady state a submission is measured in (queue and batch near saturation grow over
minutes; a run of a few hundred requests ends before they do):
- Offline (`offline_run`): a replica's share of at least `OFFLINE_MIN_QUERIES` samples,
  raised until the run lasts MIN_DURATION_S; the throughput is samples / the time to the
  last completion (the drain included), as LoadGen reports it; each sample decodes with
  the benchmark's beam search (BEAMS: GPT-J's 4 beams, as the reference implementation
  and the closed division run it; `simulator.core`: the KV the beams share and what their
  attention reads, per engine family); `offline_run(beams=1)` runs one sequence instead;
- Server (`server_sample`): Poisson arrivals over the run length at each probed rate, at
  least SERVER_MIN_QUERIES; TTFT and TPOT per request as LoadGen computes them (TPOT =
  (latency - TTFT) / (output tokens - 1)), the p99 over every request of the run. The run
  length (`server_seconds`) is LoadGen's MIN_DURATION_S (rule "loadgen", the default) or
  what the row's engine family's harness sets for the benchmark (HARNESS_SERVER_S, rule
  "harness"; MIN_DURATION_S for every benchmark or family the table lacks);
- the capacity search's upper bound is the steady completion rate of the Offline run
  (`search.offline_rates`: without its first wave and its drain), not the Offline
  throughput of the probe's own requests.
"""

from __future__ import annotations

import math
import re

from servecast import gpus
from servecast.errors import InvalidInputError
from servecast.simulator import search
from servecast.simulator.benchmark_workloads import longest
from servecast.simulator.deployment import Compiled, Deployment
from servecast.simulator.workloads import lengths

#: benchmark (accuracy suffix removed) -> (model config, named workload)
BENCHMARKS = {"gptj": ("gpt-j-6b", "mlperf-gptj"),
              "llama2-70b": ("llama-2-70b", "mlperf-llama2-70b"),
              "mixtral-8x7b": ("mixtral-8x7b", "mlperf-mixtral-8x7b")}
VENDOR_WORDS = {"nvidia", "amd", "instinct", "geforce"}
FORMS = ("sxm", "pcie", "nvl")
MEMORY_TOLERANCE = 0.05
ROOM_REQUESTS = 64
MAX_SEQS = 2048
TPS = (1, 2, 4, 8)
#: how the TP rule sizes the KV cache for every engine family: vLLM's share of the whole
#: memory, a 2-byte cache (module doc)
TP_KV_RULE = {"engine": "vllm", "kv_cache_dtype": "auto"}
MIN_DURATION_S = 600.0  # `*.Server.min_duration`, `*.Offline.min_duration` (ms / 1000)
SERVER_MIN_QUERIES = 100  # LoadGen's default `min_query_count`
#: (engine family, benchmark) -> Server `min_duration` (s) its submissions' harness sets
#: over LoadGen's. trtllm: NVIDIA's v4.1 harness, which TensorRT-LLM submissions run
#: (mlcommons/inference_results_v4.1 closed/NVIDIA/configs/llama2-70b/Server/__init__.py,
#: `ServerGPUBaseConfig.min_duration = 2400000` ms; its gptj/Server config sets none; its
#: mixtral-8x7b/Server config could not be read, so Mixtral keeps LoadGen's). vLLM
#: submissions: no harness setting found, LoadGen's.
HARNESS_SERVER_S = {("trtllm", "llama2-70b"): 2400.0}
#: `server_seconds` rules: the harness's run length, or LoadGen's for every row
SERVER_RULES = ("harness", "loadgen")
#: `<benchmark>.Offline.min_query_count`: samples of the whole system per Offline run
OFFLINE_MIN_QUERIES = {"gptj": 13368, "llama2-70b": 24576, "mixtral-8x7b": 15000}
#: beam-search width per benchmark (mlcommons/inference language/gpt-j/backend.py:
#: `num_beams` 4; others 1): what `offline_run` runs by default (module doc)
BEAMS = {"gptj": 4}


def benchmark_key(benchmark: str) -> str:
    """'llama2-70b-99.9' -> 'llama2-70b'."""
    return re.sub(r"-99(\.9)?$", "", benchmark)


def beam_width(benchmark: str, beams: int | None = 1) -> int:
    """Sequences per sample: `beams`, or with None MLPerf's width for `benchmark` (BEAMS;
    1 for a benchmark without beam search)."""
    return BEAMS.get(benchmark_key(benchmark), 1) if beams is None else beams


def catalog_gpu(accelerator: str, memory_gb: float | None) -> tuple[str | None, str]:
    """(catalog GPU, '') or (None, why not) for an MLPerf accelerator name (rule 3)."""
    words = [w for w in re.split(r"[\s_\-]+", accelerator.lower()) if w]
    words = [w for w in words if w not in VENDOR_WORDS]
    if not words or words[0] in ("n/a",):
        return None, "no accelerator"
    family = words[0]
    form = next((w for w in words[1:] if w in FORMS), None)
    key = gpus.catalog_name(f"{family}-{form}" if form else family)
    if key is None and form is None:
        key = gpus.catalog_name(family)
    if key is None:
        return None, f"GPU {accelerator!r} is not in the catalog"
    mem = gpus.catalog()[key]["values"]["Dev_Mem"][0]
    if memory_gb is not None and abs(memory_gb - mem) > MEMORY_TOLERANCE * mem:
        return None, (f"GPU {accelerator!r}: {memory_gb:g} GB differs from the catalog's "
                      f"{key} ({mem:g} GB)")
    return key, ""


def engine_family(framework: str | None) -> str | None:
    """Rule 4: 'TensorRT 10.2, CUDA 12.4' -> 'trtllm'; 'vLLM 0.5.2' -> 'vllm'; else None."""
    text = (framework or "").lower()
    if "tensorrt" in text:
        return "trtllm"
    if "vllm" in text:
        return "vllm"
    return None


def pick_tp(model: str, gpu: str, dtype: str, accelerators: int, per_node: int,
            workload: str) -> int | None:
    """The deployment rule's TP, or None when the model fits at no allowed TP: the KV
    cache sized by TP_KV_RULE whatever the row's engine family (module doc)."""
    need = ROOM_REQUESTS * longest(workload)
    for tp in TPS:
        if tp > per_node or accelerators % tp:
            continue
        try:
            c = Compiled(Deployment(model=model, gpu=gpu, tp=tp, dtype=dtype, **TP_KV_RULE))
        except InvalidInputError:
            continue
        if c.memory["kv_capacity_tokens"] >= need:
            return tp
    return None


def model_row(row: dict) -> dict:
    """The row's deployment under the rules: {model, workload, gpu, engine, dtype, tp,
    replicas, accelerators} or {reason} when it cannot be modelled."""
    if row.get("division") != "closed":
        return {"reason": f"{row.get('division')} division (the model may differ)"}
    key = benchmark_key(row["benchmark"])
    if key not in BENCHMARKS:
        return {"reason": f"benchmark {row['benchmark']!r} has no model config"}
    if row["scenario"] not in ("Server", "Offline"):
        return {"reason": f"scenario {row['scenario']} is not modelled (Server, Offline)"}
    per_node = row.get("accelerators_per_node") or 0
    accelerators = per_node * (row.get("nodes") or 1)
    if accelerators < 1:
        return {"reason": "no accelerator (a CPU-only system)"}
    gpu, why = catalog_gpu(row.get("accelerator") or "", row.get("accelerator_memory_gb"))
    if gpu is None:
        return {"reason": why}
    engine = engine_family(row.get("framework"))
    if engine is None:
        return {"reason": f"framework {row.get('framework')!r} has no engine model"}
    if row["scenario"] == "Server" and not (row.get("ttft_limit_ms")
                                            and row.get("tpot_limit_ms")):
        return {"reason": "Server row without TTFT / TPOT limits"}
    model, workload = BENCHMARKS[key]
    dtype = "fp8" if "FP8FLOPs" in gpus.catalog()[gpu]["values"] else "bf16"
    kv = "fp8" if dtype == "fp8" else "auto"
    tp = pick_tp(model, gpu, dtype, accelerators, per_node, workload)
    if tp is None:
        return {"reason": f"{model} fits no TP <= {per_node} of {accelerators} x {gpu}"}
    return {"model": model, "workload": workload, "gpu": gpu, "engine": engine,
            "dtype": dtype, "kv_cache_dtype": kv, "tp": tp,
            "replicas": accelerators // tp, "benchmark": key,
            "accelerators": accelerators, "reason": ""}


def offline_run(compiled: Compiled, workload: str, benchmark: str, replicas: int,
                seed: int = 0, min_duration_s: float = MIN_DURATION_S,
                beams: int | None = None) -> dict:
    """One replica's Offline run under MLPerf's run-length rules (module doc): its share
    (1 / `replicas`, random routing) of OFFLINE_MIN_QUERIES[benchmark] samples, raised
    until the run lasts `min_duration_s`, each sample `beams` sequences of a beam search
    (None, the default: BEAMS[benchmark], MLPerf's width). {requests, duration_s,
    offline_rps (requests / time to the last completion), steady_rps
    (`search.offline_rates`), output_tokens_per_s}."""
    key = benchmark_key(benchmark)
    n = max(math.ceil(OFFLINE_MIN_QUERIES[key] / replicas), SERVER_MIN_QUERIES)
    beams = beam_width(key, beams)
    while True:
        prompt, output = lengths(workload, n, seed=seed)
        offline, steady = search.offline_rates(compiled, prompt, output, beams)
        duration = n / offline
        if duration >= min_duration_s:
            return {"requests": n, "duration_s": duration, "offline_rps": offline,
                    "steady_rps": steady,
                    "output_tokens_per_s": float(output.sum()) / duration}
        n = math.ceil(n * min_duration_s / duration * 1.02)


def server_seconds(engine: str, benchmark: str, rule: str = "loadgen") -> float:
    """Seconds of arrivals in a Server run of `benchmark` (accuracy suffix allowed) on
    engine family `engine`: with `rule` "harness" HARNESS_SERVER_S's entry, else (and with
    "loadgen", the default: the harness rule did not beat it, docs/results.md h-duration)
    LoadGen's MIN_DURATION_S. Keyed on the family and benchmark only."""
    if rule not in SERVER_RULES:
        raise InvalidInputError(f"server run rule {rule!r}: one of {', '.join(SERVER_RULES)}")
    if rule == "loadgen":
        return MIN_DURATION_S
    return HARNESS_SERVER_S.get((engine, benchmark_key(benchmark)), MIN_DURATION_S)


def server_sample(workload: str, max_rps: float, replicas: int = 1,
                  duration_s: float = MIN_DURATION_S):
    """`search.capacity`'s sample of a Server run under MLPerf's run-length rules (module
    doc): Poisson arrivals over `duration_s`, at least SERVER_MIN_QUERIES; the pool covers
    any rate up to `max_rps` (req/s over `replicas` replicas)."""
    pool = math.ceil(max_rps / replicas * duration_s * 1.1) + SERVER_MIN_QUERIES
    return search.poisson_sample(workload, pool, replicas, duration_s=duration_s,
                                 min_requests=SERVER_MIN_QUERIES)


def server_run(compiled: Compiled, workload: str, rps: float, replicas: int = 1,
               seed: int = 0, duration_s: float = MIN_DURATION_S) -> dict:
    """The latency summary (`search.probe`) of one replica of a Server run at `rps` (req/s
    over `replicas` replicas) under MLPerf's run-length rules."""
    prompt, output, arrive = server_sample(workload, rps, replicas, duration_s)(seed)
    return search.probe_at(compiled, prompt, output, arrive(rps))

