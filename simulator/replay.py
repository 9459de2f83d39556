"""What-if replay of a request trace under each scheduling policy, with output-length
predictions from a saved model or one trained on the trace (the layer above predictors)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError
from servecast.estimator import Estimator
from servecast.frames import to_polars
from servecast.predictors.output_length import create
from servecast.predictors.output_length.core import completed
from servecast.predictors.output_length.metrics import split
from servecast.predictors.output_length.settings import PRESET
from servecast.predictors.output_length.train import load_requests
from servecast.simulator.engine import ServingConfig, capacity, scale_arrivals, simulate
from servecast.simulator.policies import POLICIES, policy_inputs

#: the what-if's KV budget, tokens: a 7B fp16 on a 40 GB GPU (36 GB at vLLM's 0.9 memory
#: utilization - 14 GB of weights - ~2 GB of activations = 20 GB at 0.5 MB per token). With
#: the engine's 120k (an 80 GB GPU) the batch never fills the budget below saturation, so no
#: request waits, every policy gives the same replay and the oracle's gain is 0
WHATIF_KV_TOKENS = 40_000


def default_config() -> ServingConfig:
    """The what-if's instance: the engine's defaults with `WHATIF_KV_TOKENS`."""
    return ServingConfig(kv_tokens=WHATIF_KV_TOKENS)


def whatif(frame, p50: np.ndarray, p90: np.ndarray, load: float = 0.9,
           policies: tuple[str, ...] = POLICIES, config: ServingConfig | None = None
           ) -> pl.DataFrame:
    """Replay `frame` (arrival_s, prompt_tokens, output_tokens) at `load` x the instance's
    saturation throughput under each policy, with predicted `p50`/`p90` (tokens, row-aligned).

    Returns one row per policy: mean/p50/p99 JCT and TTFT (s), throughput (req/s, tok/s),
    preemptions, plus the load and rates used. `config` defaults to `default_config()`.
    """
    cfg = config or default_config()
    df = _requests(frame)
    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise InvalidInputError(f"unknown policy {sorted(unknown)}; known: {', '.join(POLICIES)}")
    if not 0 < load:
        raise InvalidInputError(f"load factor {load} must be > 0 (e.g. 0.9)")
    prompt = df["prompt_tokens"].to_numpy()
    out = df["output_tokens"].to_numpy()
    p50, p90 = _aligned(p50, p90, df.height)
    cap = capacity(prompt, out, cfg)
    arr = scale_arrivals(df["arrival_s"].to_numpy(), load * cap)
    rows = []
    for name in policies:
        r = simulate(arr, prompt, out, config=cfg,
                     **policy_inputs(name, p50, p90, out, arr, cfg))
        jct, ttft = r["jct_s"], r["ttft_s"]
        rows.append({
            "policy": name, "mean_jct_s": float(jct.mean()),
            "p50_jct_s": float(np.quantile(jct, 0.5)), "p99_jct_s": float(np.quantile(jct, 0.99)),
            "mean_ttft_s": float(ttft.mean()), "p99_ttft_s": float(np.quantile(ttft, 0.99)),
            "throughput_rps": df.height / r["makespan_s"],
            "tokens_per_s": float(out.sum()) / r["makespan_s"],
            "preemptions": int(r["preemptions"]), "load": load,
            "capacity_rps": cap, "arrival_rps": load * cap,
        })
    return pl.DataFrame(rows)


#: below this share of FCFS's mean JCT the oracle's gain is noise: no request waited long
MIN_ORACLE_GAIN = 0.01


def _requests(frame) -> pl.DataFrame:
    """`frame` as polars, checked for the columns a replay reads."""
    df = to_polars(frame, "requests frame")
    for c in ("arrival_s", "prompt_tokens", "output_tokens"):
        if c not in df.columns:
            raise InvalidInputError(f"what-if needs column {c!r} (have {', '.join(df.columns)})")
    return df


def _aligned(p50, p90, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """p50 / p90 as float arrays, checked to have one value per request row."""
    p50, p90 = np.asarray(p50, float), np.asarray(p90, float)
    if len(p50) != rows or len(p90) != rows:
        raise InvalidInputError("p50/p90 must have one value per request row")
    return p50, p90


def sjf_gain(result: pl.DataFrame, policy: str = "sjf_pred") -> float | None:
    """Fraction of oracle SJF's mean-JCT reduction over FCFS that `policy` (default: SJF by
    predicted p50) achieves; None when the oracle gains under `MIN_ORACLE_GAIN` of FCFS's
    mean JCT (nothing queued: every policy admits the same requests at the same times, and
    the share would be 0/0)."""
    jct = dict(zip(result["policy"], result["mean_jct_s"], strict=True))
    gap = jct["fcfs"] - jct["sjf_oracle"]
    return None if gap <= MIN_ORACLE_GAIN * jct["fcfs"] else (jct["fcfs"] - jct[policy]) / gap


def no_gain_reason(result: pl.DataFrame) -> str:
    """Why `sjf_gain` is None for `result` and what to change (for the CLI and dashboard)."""
    jct = dict(zip(result["policy"], result["mean_jct_s"], strict=True))
    return (f"oracle SJF gains nothing over FCFS here (mean JCT {jct['sjf_oracle']:.3g} s vs "
            f"{jct['fcfs']:.3g} s): at load {result['load'][0]} the running batch never fills the "
            "KV budget or max batch, so no request waits and the admission order, the only thing "
            "a policy changes, never matters; replay more requests, raise the load or lower the "
            "KV budget")


#: the restated criterion's loads (arrival rate / saturation throughput) and seeds
CRITERION_LOADS = (0.8, 0.9, 0.95)
CRITERION_SEEDS = 5
CRITERION_POLICIES = ("sjf_pred", "sjf_p90", "sjf_pred_aging")


def whatif_share(frame, p50: np.ndarray, p90: np.ndarray,
                 loads: tuple[float, ...] = CRITERION_LOADS, seeds: int = CRITERION_SEEDS,
                 policies: tuple[str, ...] = CRITERION_POLICIES,
                 config: ServingConfig | None = None) -> pl.DataFrame:
    """The share of oracle SJF's mean-JCT reduction over FCFS that each of `policies`
    reaches, replay by replay: one row per (load, seed, policy) with the mean JCTs (s) of
    FCFS, oracle SJF and the policy and `share`.

    A seed is one draw of the queue, the same for every policy of that (load, seed): each
    arrival (the trace's, scaled to `load` x saturation throughput) moves by a uniform
    offset of at most half the mean gap, and equal priority keys are ordered at random (a
    tie-break under 0.001 token). The predictions are not perturbed, so the mean over loads
    and seeds measures the predictor, not one replay's luck (`share_summary`).
    Raises InvalidInputError where the oracle gains under `MIN_ORACLE_GAIN` (see
    `no_gain_reason`) or on a bad policy, load or seed count. `config` defaults to
    `default_config()`.
    """
    cfg = config or default_config()
    df = _requests(frame)
    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise InvalidInputError(f"unknown policy {sorted(unknown)}; known: {', '.join(POLICIES)}")
    if seeds < 1 or not loads or min(loads) <= 0:
        raise InvalidInputError(f"need seeds >= 1 (got {seeds}) and loads > 0 (got {loads})")
    prompt, out = df["prompt_tokens"].to_numpy(), df["output_tokens"].to_numpy()
    p50, p90 = _aligned(p50, p90, df.height)
    cap = capacity(prompt, out, cfg)
    rows = []
    for load in loads:
        base = scale_arrivals(df["arrival_s"].to_numpy(), load * cap)
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            arr = base + (rng.random(len(base)) - 0.5) / (load * cap)
            tie = rng.random(len(base)) * 1e-3
            jct = {}
            for name in ("fcfs", "sjf_oracle", *policies):
                inputs = policy_inputs(name, p50, p90, out, arr, cfg)
                if "priority" in inputs:
                    inputs["priority"] = inputs["priority"] + tie
                jct[name] = float(simulate(arr, prompt, out, config=cfg, **inputs)["jct_s"].mean())
            gap = jct["fcfs"] - jct["sjf_oracle"]
            if gap <= MIN_ORACLE_GAIN * jct["fcfs"]:
                raise InvalidInputError(no_gain_reason(pl.DataFrame({
                    "policy": ["fcfs", "sjf_oracle"], "load": [load, load],
                    "mean_jct_s": [jct["fcfs"], jct["sjf_oracle"]]})) + f" (seed {seed})")
            rows += [{"load": load, "seed": seed, "policy": name, "fcfs_jct_s": jct["fcfs"],
                      "oracle_jct_s": jct["sjf_oracle"], "policy_jct_s": jct[name],
                      "share": (jct["fcfs"] - jct[name]) / gap} for name in policies]
    return pl.DataFrame(rows)


def share_summary(replays: pl.DataFrame, level: float = 0.9) -> pl.DataFrame:
    """Per policy of a `whatif_share` frame: the mean share over its replays with the
    two-sided `level` t-interval of that mean (`ci_low`, `ci_high`), the smallest and
    largest share and the number of replays."""
    from scipy import stats

    rows = []
    for name in replays["policy"].unique(maintain_order=True).to_list():
        s = replays.filter(pl.col("policy") == name)["share"].to_numpy()
        half = (stats.t.ppf(0.5 + level / 2, len(s) - 1) * s.std(ddof=1) / np.sqrt(len(s))
                if len(s) > 1 else float("nan"))
        rows.append({"policy": name, "mean_share": float(s.mean()),
                     "ci_low": float(s.mean() - half), "ci_high": float(s.mean() + half),
                     "min_share": float(s.min()), "max_share": float(s.max()),
                     "replays": len(s)})
    return pl.DataFrame(rows)


def config_dict(config: ServingConfig) -> dict:
    """The config as a plain dict (for reports)."""
    return asdict(config)


def heldout(store, trace: str, models=None, max_rows: int | None = None,
            fast: bool = True) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The held-out requests of `trace` (the test part of the output-length `split`) and
    their predicted p50 / p90 output tokens, from the model dir `models` or, without one, a
    metadata model trained on the split's training part (fast settings)."""
    df = completed(load_requests(store, trace))
    train, test, _ = split(df)
    if max_rows:
        test = test[:max_rows]
    if models is not None:
        pred = Estimator.load(models).output_length_batch(test)
    else:
        pred = create("metadata", **PRESET.pick(fast).params("metadata")).fit(train).predict(test)
    return test, pred["p50"].to_numpy(), pred["p90"].to_numpy()


def whatif_trace(store, trace: str, models=None, load: float = 0.9,
                 config: ServingConfig | None = None, max_rows: int | None = None,
                 fast: bool = True) -> pl.DataFrame:
    """`whatif` on the held-out requests of `trace` (`heldout`)."""
    test, p50, p90 = heldout(store, trace, models, max_rows, fast)
    return whatif(test, p50, p90, load=load, config=config)
