"""The serving simulator (`servecast.simulator`: deployment, step-wise engine, cluster,
metrics, traces, workloads) and `servecast simulate`, on real traces (Azure conversation / code,
Mooncake) and the shipped step-time configs (physics-only step time)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from servecast import gpus
from servecast.cli import main
from servecast.errors import InvalidInputError, UnknownNameError
from servecast.simulator import Compiled, Deployment, Engine, Request, metrics, simulate_trace
from servecast.simulator.traces import load_requests, to_requests
from servecast.store import Store

CONV = "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
CODE = "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv"


@pytest.fixture(scope="module")
def l40s():
    return Compiled(Deployment(model="llama-3.1-8b", gpu="l40s"))


@pytest.fixture(scope="module")
def store(store_of):
    return store_of(("azure-llm", CONV, "conv"), ("azure-llm", CODE, "code"),
                    ("mooncake", "llm/mooncake", "mooncake"))


def _frame(run) -> pl.DataFrame:
    return metrics.requests_frame(run).sort("request_id")


# -- one request, by hand ----------------------------------------------------------------
def test_one_request_ttft_and_tpot_by_hand(l40s):
    """TTFT = the prefill iteration; then one decode iteration per further token at the
    growing context; the step API reports each token."""
    eng = Engine(l40s)
    eng.add(Request(7, 2.0, prompt_tokens=1000, output_tokens=4))
    steps = []
    while (s := eng.step()) is not None:
        steps.append(s)
    prefill = l40s.step_ms([1000], [0], []) / 1000
    decodes = [l40s.step_ms([], [], [c]) / 1000 for c in (1000, 1001, 1002)]
    assert [s.duration_s for s in steps] == pytest.approx([prefill, *decodes], rel=1e-12)
    assert steps[0].start_s == 2.0 and steps[0].first_token_ids == [7]
    assert [s.token_ids for s in steps] == [[7]] * 4 and steps[-1].finished_ids == [7]
    run = simulate_trace([Request(7, 2.0, 1000, 4)], l40s)
    row = _frame(run).row(0, named=True)
    assert row["ttft_ms"] == pytest.approx(prefill * 1000, rel=1e-9)
    assert row["tpot_ms"] == pytest.approx(sum(decodes) / 3 * 1000, rel=1e-9)
    assert row["e2el_ms"] == pytest.approx((prefill + sum(decodes)) * 1000, rel=1e-9)


def test_beam_search_by_hand(l40s):
    """4 beams under vLLM: the prompt prefilled once, then 4 decode sequences per iteration,
    each reading the whole context (paged attention per sequence); KV holds the prompt's
    blocks once but the last, and each beam's own tokens."""
    from servecast.simulator.core import beam_kv_blocks

    eng = Engine(l40s)
    eng.add(Request(3, 0.0, prompt_tokens=1000, output_tokens=4, beams=4))
    steps, used = [], []
    while (s := eng.step()) is not None:
        steps.append(s)
        used.append(eng.total - eng.free)
    prefill = l40s.step_ms([1000], [0], []) / 1000
    decodes = [l40s.step_ms([], [], [1000 + g] * 4) / 1000 for g in (0, 1, 2)]
    assert [s.duration_s for s in steps] == pytest.approx([prefill, *decodes], rel=1e-12)
    assert [s.token_ids for s in steps] == [[3]] * 4  # one returned sequence: 4 tokens
    # the prompt's 63 blocks of 16, then 62 shared (992 tokens) and per beam a copy of the
    # last 8 prompt tokens' block, which also takes the beam's first tokens
    assert used == [63, 62 + 4, 62 + 4, 0]
    assert used[1:3] == [beam_kv_blocks(1000, g, 4, 16) for g in (1, 2)]
    assert eng.free == eng.total  # every block back, the beams' too
    # the KV a beam request needs: its prompt once, not 4 times
    small = Compiled(Deployment(gpu="l4", gpu_memory_utilization=0.72))
    room = small.kv_blocks * 16
    p = room // 2
    fits = Engine(small)
    fits.add(Request(0, 0.0, p, 100, beams=4))  # p + 400 tokens < room < 4 (p + 100)
    while fits.step() is not None:
        pass
    assert fits.seqs[0].finish_s is not None and fits.preemptions == 0
    with pytest.raises(InvalidInputError, match="needs .* KV tokens"):
        Engine(small).add(Request(1, 0.0, p, room // 4, beams=4))
    with pytest.raises(InvalidInputError, match="beams=0 must be a positive integer"):
        Engine(small).add(Request(1, 0.0, 10, 10, beams=0))
    # a batch of beam requests completes fewer per second than single sequences, more than
    # 4 full copies of each
    reqs = [Request(i, 0.0, 800, 60) for i in range(64)]
    one, four = (simulate_trace([Request(r.request_id, 0.0, 800, 60, beams=b) for r in reqs],
                                l40s) for b in (1, 4))
    copies = simulate_trace([Request(i, 0.0, 800, 60) for i in range(4 * 64)], l40s)
    t = [max(s.finish_s for s in r.cluster.engines[0].seqs.values())
         for r in (one, four, copies)]
    assert t[0] < t[1] < t[2]


def test_chunked_prefill_splits_a_long_prompt_at_its_offsets():
    dep = Compiled(Deployment(max_num_batched_tokens=512))
    run = simulate_trace([Request(0, 0.0, 1200, 2)], dep)
    want = sum(dep.step_ms([n], [o], []) for n, o in ((512, 0), (512, 512), (176, 1024)))
    assert _frame(run)["ttft_ms"][0] == pytest.approx(want, rel=1e-9)
    whole = Compiled(Deployment(max_num_batched_tokens=512, chunked_prefill=False))
    one = simulate_trace([Request(0, 0.0, 1200, 2)], whole)  # alone: the whole prompt at once
    assert _frame(one)["ttft_ms"][0] == pytest.approx(whole.step_ms([1200], [0], []), rel=1e-9)


def test_fast_decode_path_equals_single_steps(store, l40s):
    """`simulate_trace` runs decode-only stretches in one go; stepping the same engine one
    iteration at a time gives the same per-request times."""
    reqs = load_requests("conv", store)[:400]
    fast = _frame(simulate_trace(reqs, l40s))
    eng = Engine(l40s)
    pending = sorted(reqs, key=lambda r: r.arrival_s)
    i = 0
    while i < len(pending) or not eng.idle:
        if i < len(pending) and (eng.idle or pending[i].arrival_s <= eng.now):
            eng.add(pending[i])
            i += 1
        else:
            eng.step()
    slow = {s.req.request_id: s for s in eng.seqs.values()}
    first = np.array([slow[r].first_s - slow[r].req.arrival_s for r in fast["request_id"]])
    finish = np.array([slow[r].finish_s - slow[r].req.arrival_s for r in fast["request_id"]])
    np.testing.assert_allclose(fast["ttft_ms"].to_numpy(), first * 1000, rtol=1e-9)
    np.testing.assert_allclose(fast["e2el_ms"].to_numpy(), finish * 1000, rtol=1e-9)


def test_table_fast_paths_reproduce_step_ms(l40s):
    """The engine's per-iteration call (`batch_ms`, from sums) and the decode-stretch call
    (`decode_ms`, vectorized) are the step-time runtime's own tables, not a fallback."""
    assert l40s.batch_ms.__name__ == "batch_ms" and l40s.decode_ms.__name__ == "decode_ms"
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.integers(1, 4000, rng.integers(0, 12)).tolist()
        o = rng.integers(0, 30000, len(p)).tolist()
        d = rng.integers(0, 20000, rng.integers(0 if p else 1, 300)).tolist()
        want = l40s.step_ms(p, o, d)
        assert l40s.batch_ms(p, o, len(d), sum(d)) == pytest.approx(want, rel=1e-9)
    # timing runs on a copy of the spec with unbounded memory (shared prefixes are counted
    # once in blocks but read per sequence): the memory size must not change step times
    from servecast.predictors.step_time.runtime import Runtime

    real = Runtime({}, [], {}).engine("llama-3.1-8b", "l40s")
    assert l40s.step_ms([512], [64], [900] * 8) == real.step_ms([512], [64], [900] * 8)
    means = np.array([0.0, 3.5, 700.0, 65000.0])
    want = [l40s.step_ms([], [], [m] * 33) for m in means]
    np.testing.assert_allclose(l40s.decode_ms(33, means), want, rtol=1e-9)


# -- scheduler behaviour -----------------------------------------------------------------
def test_preemption_by_recompute_when_kv_runs_out(store):
    """A small KV cache (10% of an L4's memory left after the weights) and long outputs:
    requests are preempted, prefilled again, and all finish with their full output."""
    dep = Compiled(Deployment(gpu="l4", gpu_memory_utilization=0.72))
    reqs = [Request(i, 0.0, 2000, 1500) for i in range(12)]
    run = simulate_trace(reqs, dep)
    eng = run.cluster.engines[0]
    df = _frame(run)
    assert dep.kv_blocks * 16 < 12 * 3500 and eng.preemptions > 0
    assert df["preemptions"].sum() == eng.preemptions
    assert eng.prefilled > 12 * 2000  # the preempted prompts (and outputs) recomputed
    assert (df["output_tokens"] == 1500).all() and df["e2el_ms"].is_not_null().all()
    assert eng.free == eng.total and not eng.running and not eng.waiting  # no block leaked
    roomy = simulate_trace(reqs, Compiled(Deployment(gpu="h100-sxm")))
    assert roomy.cluster.engines[0].preemptions == 0


def test_prefix_cache_hit_by_hand(l40s):
    """B shares A's first two 512-token hash blocks: B prefills only the rest, after them."""
    a = Request(0, 0.0, 1100, 2, prefix_hashes=(1, 2, 3))
    b = Request(1, 5.0, 1100, 2, prefix_hashes=(1, 2, 9))
    df = _frame(simulate_trace([a, b], l40s))
    assert df["cached_tokens"].to_list() == [0, 1024]
    assert df["ttft_ms"][1] == pytest.approx(l40s.step_ms([76], [1024], []), rel=1e-9)
    off = _frame(simulate_trace([a, b], Compiled(Deployment(prefix_caching=False))))
    assert off["cached_tokens"].to_list() == [0, 0]


def test_prefix_cache_hits_on_mooncake(store):
    """Mooncake's first 300 conversations at a quarter of their rate: hits are observable
    and bounded by an infinite cache's leading-prefix reuse."""
    reqs = load_requests("mooncake", store, rate_scale=0.25)[:300]
    seen, bound = set(), 0
    for r in reqs:
        lead = 0
        for h in r.prefix_hashes[:(r.prompt_tokens - 1) // 512]:
            if h not in seen:
                break
            lead += 1
        bound += lead * 512
        seen.update(r.prefix_hashes[:r.prompt_tokens // 512])
    bound /= sum(r.prompt_tokens for r in reqs)
    cached = simulate_trace(reqs, Compiled(Deployment(gpu="h100-sxm")))
    on = metrics.summarize(cached)
    off = metrics.summarize(simulate_trace(
        reqs, Compiled(Deployment(gpu="h100-sxm", prefix_caching=False))))
    assert 0.02 < on["prefix_cache_hit_rate"] <= bound and off["prefix_cache_hit_rate"] == 0
    eng = cached.cluster.engines[0]  # every block free or cached, none referenced
    assert eng.free + len(eng.lru) * eng.hb == eng.total and not any(eng.cache.values())
    assert on["mean_ttft_ms"] < off["mean_ttft_ms"]


def test_routers_differ(store):
    """Mooncake's first 1000 conversations on 4 replicas of 4 H100s: prefix affinity sends a
    follow-up turn where its conversation is cached (about twice round robin's hits; every
    request shares block 0, which the load bound keeps from piling on one replica); least
    outstanding tokens places requests differently from round robin."""
    reqs = load_requests("mooncake", store)[:1000]
    dep = Compiled(Deployment(gpu="h100-sxm", tp=4, replicas=4))
    runs = {r: simulate_trace(reqs, dep, router=r)
            for r in ("round_robin", "least_tokens", "prefix_affinity")}
    hit = {r: metrics.summarize(run)["prefix_cache_hit_rate"] for r, run in runs.items()}
    assert hit["prefix_affinity"] > 1.5 * max(hit["round_robin"], hit["least_tokens"])
    rr, lt = (_frame(runs[r])["replica"].to_list() for r in ("round_robin", "least_tokens"))
    assert rr[:8] == [0, 1, 2, 3] * 2 and rr != lt
    per_replica = _frame(runs["prefix_affinity"])["replica"].value_counts()["count"]
    assert per_replica.min() > 0.1 * len(reqs)


def test_fcfs_and_sjf_differ_under_load(store, l40s):
    """At 4x Azure conversation's rate one L40S queues: shortest (true or predicted) output
    first lowers the mean E2E latency. SJF with aging spans the two: no credit for waiting
    is SJF, overwhelming credit is FCFS, the default is a third schedule below FCFS. (Its
    mean need not lie between them: with continuous batching SJF's is not a minimum.)"""
    reqs = load_requests("conv", store, rate_scale=4.0)[:1000]
    pred = [Request(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens,
                    p50=float(r.output_tokens), p90=float(r.output_tokens) * 1.5) for r in reqs]

    def mean_e2el(policy: str, **kw) -> float:
        return metrics.summarize(simulate_trace(pred, l40s, policy=policy, **kw))["mean_e2el_ms"]

    e2el = {p: mean_e2el(p) for p in ("fcfs", "sjf_pred", "sjf_pred_aging", "kv_p90")}
    assert e2el["sjf_pred"] < 0.9 * e2el["fcfs"]
    assert e2el["sjf_pred_aging"] < 0.95 * e2el["fcfs"]
    assert mean_e2el("sjf_pred_aging", aging_tokens_per_s=0.0) == e2el["sjf_pred"]
    assert mean_e2el("sjf_pred_aging", aging_tokens_per_s=1e9) == e2el["fcfs"]
    assert len({round(v, 6) for v in e2el.values()}) == 4


# -- metrics ------------------------------------------------------------------------------
def test_goodput_is_vllms_definition(store, l40s):
    run = simulate_trace(load_requests("code", store)[:500], l40s)
    slo = metrics.parse_goodput(["ttft:300", "tpot:40"])
    s = metrics.summarize(run, slo)
    df = metrics.requests_frame(run, slo)
    good = ((df["ttft_ms"] <= 300) & (df["tpot_ms"].fill_null(0) <= 40)).sum()
    assert 0 < good < df.height
    assert s["request_goodput"] == pytest.approx(good / s["duration"])
    assert s["slo_attainment"] == pytest.approx(good / df.height)
    assert s["request_throughput"] == pytest.approx(500 / s["duration"])
    assert s["p50_ttft_ms"] == pytest.approx(np.percentile(df["ttft_ms"].to_numpy(), 50))
    assert metrics.summarize(run)["request_goodput"] is None


@pytest.mark.parametrize("bad", ["ttft", "latency:5", "ttft:-1", "tpot:abc"])
def test_bad_goodput(bad):
    with pytest.raises(InvalidInputError, match="--goodput"):
        metrics.parse_goodput([bad])


def test_fast_paths_read_the_runtime_tables_and_match_step_ms(l40s):
    """The engine's vectorized decode and scalar batch timing are built from the step-time
    runtime's public `tables()` (not the per-call fallback loops) and reproduce `step_ms`."""
    from servecast.simulator.deployment import _scalar_step, _vector_decode

    tab = l40s._engine.tables()
    assert tab["log_decode_ms"].shape == (len(tab["log_batch"]), len(tab["log1p_context"]))
    assert tab["lists"]["log_prefill_ms"] == tab["log_prefill_ms"].tolist()
    assert _vector_decode(l40s._engine, l40s.efficiency) is not None
    assert _scalar_step(l40s._engine, l40s.efficiency) is not None
    means = np.array([10.0, 900.0, 5000.0])
    assert l40s.decode_ms(48, means) == pytest.approx(
        [l40s.step_ms((), None, [m] * 48) for m in means], rel=1e-9)
    assert l40s.batch_ms([700, 64], [0, 300], 20, 20 * 1500) == pytest.approx(
        l40s.step_ms([700, 64], [0, 300], [1500] * 20), rel=1e-9)


# -- bad input ----------------------------------------------------------------------------
def test_trtllm_kv_cache_takes_its_share_of_the_memory_left_after_the_weights(l40s):
    """vLLM: KV = 0.9 x memory - weights; TensorRT-LLM: KV = 0.9 x (memory - weights)."""
    trt = Compiled(Deployment(model="llama-3.1-8b", gpu="l40s", engine="trtllm"))
    mem, weights = gpus.resolve_spec("l40s")["Dev_Mem"], l40s.memory["weights_gib"]
    per = l40s.memory["kv_bytes_per_token"]
    assert trt.memory["weights_gib"] == weights and trt.memory["kv_bytes_per_token"] == per
    assert l40s.memory["kv_capacity_tokens"] == pytest.approx(
        (0.9 * mem - weights) * 2**30 / per, abs=1)
    assert trt.memory["kv_capacity_tokens"] == pytest.approx(
        0.9 * (mem - weights) * 2**30 / per, abs=1)
    assert trt.kv_blocks > l40s.kv_blocks
    # the step time is the same: only the memory rule differs
    assert trt.step_ms([512], [0], [900] * 8) == l40s.step_ms([512], [0], [900] * 8)


def test_model_too_large_for_the_gpu_at_that_tp():
    with pytest.raises(InvalidInputError, match=r"llama-2-70b .*GiB.* TP 1.*raise TP"):
        Compiled(Deployment(model="llama-2-70b", gpu="l40s", tp=1))
    assert Compiled(Deployment(model="llama-2-70b", gpu="l40s", tp=4)).kv_blocks > 0


def test_unknown_names_list_the_known_ones(l40s):
    with pytest.raises(UnknownNameError, match="known models: .*llama-3.1-8b"):
        Compiled(Deployment(model="llama-9"))
    with pytest.raises(UnknownNameError, match="known GPUs: .*h100-sxm"):
        Compiled(Deployment(gpu="h900"))
    with pytest.raises(InvalidInputError, match="known policies: fcfs, sjf_pred"):
        Engine(l40s, policy="lifo")
    with pytest.raises(InvalidInputError, match="known routers: round_robin"):
        simulate_trace([Request(0, 0.0, 10, 10)], l40s, router="random")
    with pytest.raises(InvalidInputError, match="sjf_pred needs .*p50.*--lengths-model"):
        simulate_trace([Request(0, 0.0, 10, 10)], l40s, policy="sjf_pred")
    with pytest.raises(UnknownNameError, match="known workloads: .*sharegpt"):
        load_requests("workload:nope")


def test_cli_bad_input_exits_2(capsys):
    cases = [(["--policy", "lifo"], "known policies"),
             (["--model", "llama-2-70b", "--tp", "1"], "raise TP"),
             (["--gpu", "h900"], "known GPUs"), (["--router", "x"], "known routers"),
             (["--goodput", "ttft:0"], "positive number"),
             (["--kv-cache-dtype", "int4"], "kv_cache_dtype='int4': use one of")]
    for args, msg in cases:
        code = main(["simulate", "workload:sharegpt", "--num-prompts", "5", *args])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and "Traceback" not in err, args


# -- the command --------------------------------------------------------------------------
def test_cli_simulate_store_trace_writes_vllm_results(data, tmp_path, capsys):
    db, out = tmp_path / "s.duckdb", tmp_path / "res"
    with Store(db) as store:
        store.ingest("azure-llm", [data / CODE], trace="code")
        n = store.requests("code").pl().filter(pl.col("output_tokens") > 0).height
    assert n > 3000
    code = main(["simulate", "code", "--db", str(db), "--gpu", "h100-sxm", "--replicas", "2",
                 "--router", "least_tokens", "--goodput", "ttft:500", "tpot:30",
                 "--num-prompts", "3000", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "Request goodput (req/s):" in text and "P99 TPOT (ms):" in text
    doc = json.loads((out / "result.json").read_text())
    rows = pl.read_ndjson(out / "requests.jsonl")
    assert doc["completed"] == rows.height == len(doc["ttfts"]) == 3000
    for key in ("request_throughput", "request_goodput", "output_throughput", "mean_ttft_ms",
                "median_tpot_ms", "p99_itl_ms", "p90_e2el_ms", "input_lens", "output_lens"):
        assert key in doc
    assert doc["request_goodput"] == pytest.approx(rows["good"].sum() / doc["duration"])
    arrivals = rows["arrival_s"]
    assert doc["request_rate"] == pytest.approx(2999 / (arrivals.max() - arrivals.min()))
    assert sorted(rows["replica"].unique().to_list()) == [0, 1]
    assert not list(out.glob("*.tmp"))


def test_cli_named_workload_and_rate_scale(capsys):
    base = [main(["simulate", "workload:sharegpt", "--num-prompts", "200", "--rate", "2",
                  "--json", *extra]) for extra in ([], ["--rate-scale", "4"])]
    a, b = (json.loads(part) for part in _json_docs(capsys.readouterr().out))
    assert base == [0, 0] and a["completed"] == b["completed"] == 200
    assert b["duration"] < a["duration"] and b["mean_ttft_ms"] > a["mean_ttft_ms"]


def _json_docs(text: str) -> list[str]:
    docs, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth, start = depth + 1, i if depth == 0 else start
        elif ch == "}":
            depth -= 1
            if depth == 0:
                docs.append(text[start:i + 1])
    return docs


def test_synthesized_trace_keeps_prefix_reuse(store):
    """`synth:mooncake` samples a minute of Mooncake-like traffic, prefix hashes included:
    the simulated cache hits on it."""
    reqs = load_requests("synth:mooncake", store, duration_s=60, seed=1)
    assert 50 < len(reqs) and all(r.prefix_hashes for r in reqs)
    s = metrics.summarize(simulate_trace(reqs, Compiled(Deployment(gpu="h100-sxm"))))
    assert s["completed"] == len(reqs) and s["prefix_cache_hit_rate"] > 0


def test_rate_retimes_a_trace_as_poisson(store):
    """`rate` gives a store trace Poisson arrivals at that rate (lengths and order kept)."""
    own = load_requests("code", store)[:2000]
    poisson = load_requests("code", store, rate=20.0, seed=3)[:2000]
    gaps = np.diff([r.arrival_s for r in poisson])
    assert 1 / gaps.mean() == pytest.approx(20.0, rel=0.1)
    assert np.std(gaps) / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential: CV 1
    assert [r.prompt_tokens for r in poisson] == [r.prompt_tokens for r in own]
    with pytest.raises(InvalidInputError, match="--rate"):
        load_requests("code", store, rate=0.0)


def test_to_requests_reads_prefix_hashes_and_predictions():
    df = pl.DataFrame({"arrival_s": [0.5], "prompt_tokens": [1100], "output_tokens": [3],
                       "prefix_hashes": [[4, 5, 6]], "p50": [2.0], "p90": [9.0]})
    (r,) = to_requests(df)
    assert (r.request_id, r.prefix_hashes, r.p50, r.p90) == (0, (4, 5, 6), 2.0, 9.0)


@pytest.mark.slow
def test_sjf_by_lengths_predicted_by_a_trained_model(data, tmp_path, capsys):
    """An output-length model trained on Azure conversation's first rows predicts p50 / p90
    (`--lengths-model`); at 4x the trace's rate SJF by predicted p50 and by p90 beat FCFS on
    mean E2E latency."""
    from servecast.predictors.output_length.train import train_output_length

    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        store.ingest("azure-llm", [data / CONV], trace="conv")
        model = train_output_length(store, "conv", tmp_path / "ol", max_rows=5000)["path"]
    e2el = {}
    for policy in ("fcfs", "sjf_pred", "sjf_p90"):
        assert main(["simulate", "conv", "--db", str(db), "--num-prompts", "1500",
                     "--rate-scale", "4", "--lengths-model", str(model), "--policy", policy,
                     "--json"]) == 0
        e2el[policy] = json.loads(capsys.readouterr().out)["mean_e2el_ms"]
    assert e2el["sjf_pred"] < 0.95 * e2el["fcfs"] and e2el["sjf_p90"] < 0.95 * e2el["fcfs"]


@pytest.mark.slow
def test_a_saved_step_time_model_drives_the_simulator(fitted_kind):
    """`--step-model DIR`: a saved step-time model (the registry's conformance fixture, with
    learned operator residuals) times the iterations; its table fast paths still reproduce
    its `step_ms`, and its times differ from physics only."""
    from servecast.simulator.deployment import load_runtime

    *_, path = fitted_kind("step_time")
    learned = Compiled(Deployment(gpu="h100-sxm"), load_runtime(path))
    physics = Compiled(Deployment(gpu="h100-sxm"))
    assert learned.batch_ms.__name__ == "batch_ms" and learned.decode_ms.__name__ == "decode_ms"
    assert learned.batch_ms([700], [300], 20, 20 * 800) == pytest.approx(
        learned.step_ms([700], [300], [800] * 20), rel=1e-9)
    assert learned.step_ms([2048], [0], []) != pytest.approx(physics.step_ms([2048], [0], []))
    run = simulate_trace([Request(0, 0.0, 2048, 3)], learned)
    want = learned.step_ms([2048], [0], []) + learned.step_ms([], [], [2048])
    assert _frame(run)["ttft_ms"][0] + _frame(run)["tpot_ms"][0] == pytest.approx(want)
