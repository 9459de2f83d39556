"""Validation of capacity search against MLPerf Inference v4.1 LLM results (issue 24).

Per MLPerf row the simulator can model (`servecast.simulator.mlperf`: documented rules, no
system named): Server rows get the predicted max SLO-compliant QPS (capacity search under
the row's own p99 TTFT / TPOT limits) beside the submitted QPS, and the predicted mean / p99
TTFT and TPOT at the submitted QPS beside the measured; Offline rows the predicted
throughput (tokens/s; GPT-J rows report samples/s, which is what MLPerf records for it)
beside the measured. One table per benchmark x GPU, then the median |error| of max QPS,
of mean TPOT and of Offline throughput on the development and the held-out rows.

Two diagnostics of the mean TPOT beside the issue's metric (never replacing it):
- at the predicted knee: the simulator's mean / p99 TTFT and TPOT at its OWN predicted max
  QPS, the operating point a submission runs at, read from the capacity search's own probe
  at each seed's highest holding rate (no second search; with several seeds the median over
  seeds of those probes), and the median |error| of that mean TPOT ("mean TPOT at the
  predicted knee"); what ends the search above the knee (`knee_bound`: the limit its next
  probe broke, or "throughput" at the Offline bound) beside the measured p99 nearer its
  limit (`bound`);
- conditioning: the simulator's mean TPOT at the submitted QPS x (1 - COND_STEP) and
  x (1 + COND_STEP) (one run each, cached like the run at the submitted QPS), and
  d log TPOT / d log QPS between them: how far a relative capacity error moves the TPOT at
  the operating point. The split of each row's TPOT error into capacity and knee parts:
  log(TPOT at submitted / TPOT at knee) + log(TPOT at knee / measured) = log(1 + error).

The maximum batch (`--max-num-seqs`): by default each Server deployment runs at the
max_num_seqs that maximises its simulated SLO-compliant capacity (`simulator.max_batch`: a
geometric grid from the KV bound, coarse to fine, ties to the smaller cap; tuned once per
deployment, efficiency and SLO), as a submitter tunes the engine's maximum batch size for
the highest Server QPS under the limits; the capacity search, the knee, the run at the
submitted QPS and the conditioning runs all use it. Offline runs keep MAX_SEQS (no latency
limit: the largest batch the KV cache holds; a smaller cap only lowers the throughput,
docs/results.md). `--max-num-seqs N` runs every Server row at N instead (MAX_SEQS: the
earlier protocol, the KV cache bounding the batch).

Engine efficiency: one factor per engine family (iteration time = step time / factor),
fitted on the DEVELOPMENT rows only as the median of measured / predicted (factor 1) over
their Server max QPS and Offline throughput; rows of a family with no development row keep
factor 1. Split by submitter: submitters sorted by name, even positions development, odd
held out (whole submitters, so no system is on both sides).

Step time (`--step-model DIR`): by default every replica is compiled physics only
(`search.compile_replica(deployment)`: no learned operator residual, no engine overhead);
with a saved step_time model (`servecast train step-time --db STORE --out DIR`, loaded as
`servecast capacity --step-model` loads it) every compile uses it instead (the Offline runs,
the capacity search and its max_num_seqs tuning, the runs at the submitted QPS and the
conditioning runs): the learned operator residuals and the overhead fitted for the row's
engine family. The efficiency factors are fitted on the development rows either way. The
header and `--out` (`step_model`) say which ran.

Run lengths (`--protocol`): "mlperf" (default) runs every row as long as MLPerf's LoadGen
rules make a submission run (`servecast.simulator.mlperf`: Server probes of LoadGen's
600 s, `--server-seconds loadgen`, the default; `--server-seconds harness`: as long as the
engine family's harness runs the benchmark, 2400 s for TensorRT-LLM's Llama-2-70B, else
600 s, off by default: docs/results.md, h-duration; Offline runs of min_query_count
raised to 600 s); "short" runs `--requests` per Server probe and `--offline-requests` per
Offline run (the earlier protocol). Either way each sample decodes with MLPerf's beam
search (`--beams mlperf`, the default: GPT-J's 4 beams) or, with `--beams one`, as one
sequence.

    .venv/bin/python benchmarks/capacity_mlperf.py [--protocol mlperf|short] [--seeds 2]
        [--requests 800] [--offline-requests 2000] [--beams one|mlperf]
        [--server-seconds harness|loadgen]
        [--rows all|dev|held-out] [--efficiency FAMILY=F ...] [--max-num-seqs auto|N]
        [--step-model DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from servecast.datasets.catalog import shared_path
from servecast.errors import InvalidInputError, ServecastError
from servecast.predictors.step_time.runtime import Runtime, describe_overhead, overhead_terms
from servecast.simulator import max_batch, mlperf, search
from servecast.simulator.deployment import Deployment, load_runtime
from servecast.simulator.mlperf import MAX_SEQS, model_row
from servecast.simulator.workloads import lengths, poisson_arrivals
from servecast.store import Store

#: the latency summary read at the predicted knee (`Predictor.knee`)
KNEE_KEYS = ("mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms")
#: the relative QPS step of the conditioning runs (module doc)
COND_STEP = 0.05


def load_rows() -> list[dict]:
    """Every v4.1 row, ingested into a temporary store by the mlperf adapter."""
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "m.duckdb") as store:
        store.ingest("mlperf", [shared_path("serving/mlperf/inference_v4.1_llm.csv")],
                     trace="mlperf_v4_1")
        cur = store.con.execute("SELECT * FROM mlperf_results ORDER BY benchmark, scenario, "
                                "accelerator, submitter, system")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def split(rows: list[dict]) -> None:
    """Mark each row development or held-out by its submitter's position (module doc)."""
    order = sorted({r["submitter"] for r in rows})
    dev = {s for i, s in enumerate(order) if i % 2 == 0}
    for r in rows:
        r["split"] = "dev" if r["submitter"] in dev else "held-out"


class Predictor:
    """Predictions per (deployment, efficiency), computed once per replica setup.

    `protocol` "mlperf": every run as long as MLPerf's rules make a submitted one
    (`servecast.simulator.mlperf`: Offline runs of the benchmark's min_query_count raised to
    600 s, Server probes of `server_rule`'s run length of arrivals, `mlperf.server_seconds`,
    the search bounded by the Offline run's steady rate). "short": `requests` per Server
    probe, `offline_requests` per Offline run, the search bounded by its probe sample's
    Offline throughput (the earlier protocol)."""

    def __init__(self, requests: int, seeds: int, offline_requests: int,
                 protocol: str = "mlperf", beams: int | None = None,
                 max_num_seqs: int | None = None, runtime: Runtime | None = None,
                 server_rule: str = "loadgen"):
        self.requests, self.seeds, self.offline_n = requests, seeds, offline_requests
        self.server_rule = server_rule  # `mlperf.server_seconds`'s rule (protocol "mlperf")
        self.protocol, self.beams, self.max_num_seqs = protocol, beams, max_num_seqs
        self.runtime = runtime  # the step-time runtime of every compile (None: physics only)
        self._compiled, self._cap, self._sat, self._at = {}, {}, {}, {}
        self._tuned: dict[tuple, max_batch.Tuned | None] = {}  # None: a given cap
        self.cpu_s: dict[str, float] = {}  # process CPU seconds per `_timed` part

    def deployment(self, m: dict, eff: float, cap: int = MAX_SEQS) -> Deployment:
        return Deployment(model=m["model"], gpu=m["gpu"], tp=m["tp"], dtype=m["dtype"],
                          engine=m["engine"], max_num_seqs=cap, efficiency=eff,
                          kv_cache_dtype=m["kv_cache_dtype"])

    def server_s(self, m: dict) -> float:
        """Seconds of arrivals in each of the row's Server runs (protocol "mlperf")."""
        return mlperf.server_seconds(m["engine"], m["benchmark"], self.server_rule)

    @staticmethod
    def key(m: dict, eff: float, cap: int = MAX_SEQS) -> tuple:
        """The cache key of a row's deployment at efficiency `eff` and max_num_seqs `cap`."""
        return (m["model"], m["gpu"], m["tp"], m["dtype"], m["kv_cache_dtype"], m["engine"],
                eff, cap)

    def compiled(self, m: dict, eff: float, cap: int = MAX_SEQS):
        key = self.key(m, eff, cap)
        if key not in self._compiled:
            self._compiled[key] = search.compile_replica(self.deployment(m, eff, cap),
                                                         self.runtime)
        return key, self._compiled[key]

    def cap(self, m: dict, slo: search.SLO, eff: float) -> int:
        """max_num_seqs of the row's Server runs: the given one, or with None the one
        `max_batch.tune` picks for the deployment and SLO (module doc)."""
        if self.max_num_seqs is not None:
            return self.max_num_seqs
        self._search(m, slo, eff)
        return self._tuned[(self.key(m, eff), slo)].max_num_seqs

    def tried(self, m: dict, slo: search.SLO, eff: float) -> str | None:
        """The tuning's capacity per cap tried (`max_batch.Tuned.text`; None: not tuned)."""
        tuned = self._tuned.get((self.key(m, eff), slo))
        return tuned and f"{tuned.text()} (KV bound {tuned.kv_bound})"

    def _search(self, m: dict, slo: search.SLO, eff: float) -> search.Capacity:
        """The capacity search of one replica (cached per deployment and SLO), at the
        given max_num_seqs or at the tuned one."""
        given = self.max_num_seqs or MAX_SEQS
        k = (self.key(m, eff, given), slo)
        if k not in self._cap:
            if self.protocol == "mlperf":
                upper = self._offline(m, eff, 1)["steady_rps"]  # per replica
                sample = mlperf.server_sample(m["workload"], upper,
                                              duration_s=self.server_s(m))
                bound = {"upper_rps": upper}
            else:
                sample, bound = search.poisson_sample(m["workload"], self.requests), {}
            with self._timed("search"):
                base = self.compiled(m, eff, given)[1]  # cached: the Offline run uses MAX_SEQS
                self._cap[k], c, self._tuned[k] = max_batch.capacity_at(
                    base, slo, sample, self.max_num_seqs is None, self.seeds, **bound)
            self._compiled.setdefault(self.key(m, eff, c.deployment.max_num_seqs), c)
        return self._cap[k]

    def max_qps(self, m: dict, slo: search.SLO, eff: float) -> float:
        """Per-replica capacity x replicas (random routing: Poisson per replica)."""
        return self._search(m, slo, eff).rate * m["replicas"]

    def knee(self, m: dict, slo: search.SLO, eff: float) -> dict[str, float]:
        """The latency summary at the predicted max QPS (module doc): per seed the search's
        probe at that seed's highest holding rate, the median over seeds of each of
        KNEE_KEYS; `qps` the system's rate there (the median of those rates x replicas);
        `bound` what ends the search above it (`breaks` of the seed's lowest failing probe,
        the most common over seeds)."""
        cap = self._search(m, slo, eff)
        at = [next(p for p in cap.probes if p["seed"] == seed and p["met"] and p["rate"] == r)
              for seed, r in enumerate(cap.per_seed)]
        above = [min((p for p in cap.probes if p["seed"] == seed and not p["met"]),
                     key=lambda p: p["rate"], default=None) for seed in range(len(at))]
        binds = [breaks(p, slo) for p in above]
        return {"qps": float(np.median(cap.per_seed)) * m["replicas"],
                "bound": max(sorted(set(binds)), key=binds.count)} | {
            k: float(np.median([p[k] for p in at])) for k in KNEE_KEYS}

    def at_qps(self, m: dict, qps: float, eff: float, part: str = "at_qps",
               cap: int = MAX_SEQS) -> dict:
        """The latency summary of one replica at the system's `qps` with max_num_seqs
        `cap` (cached; `part`: what its CPU time counts as in `cpu_s`)."""
        key, c = self.compiled(m, eff, cap)
        k = (key, qps / m["replicas"])
        if k not in self._at:
            with self._timed(part):
                if self.protocol == "mlperf":
                    self._at[k] = mlperf.server_run(c, m["workload"], qps, m["replicas"],
                                                    duration_s=self.server_s(m))
                else:
                    prompt, output = lengths(m["workload"], self.requests, seed=0)
                    arrive = poisson_arrivals(self.requests, qps / m["replicas"], 0)
                    self._at[k] = search.probe(c, arrive, prompt, output)
        return self._at[k]

    def conditioning(self, m: dict, qps: float, eff: float,
                     cap: int = MAX_SEQS) -> dict[str, float]:
        """Mean TPOT (ms) at `qps` x (1 -/+ COND_STEP) and d log TPOT / d log QPS between
        them (module doc)."""
        lo, hi = (self.at_qps(m, qps * f, eff, "conditioning", cap)["mean_tpot_ms"]
                  for f in (1 - COND_STEP, 1 + COND_STEP))
        return {"tpot_lo_ms": lo, "tpot_hi_ms": hi,
                "dlog_tpot": math.log(hi / lo) / math.log((1 + COND_STEP) / (1 - COND_STEP))}

    @contextmanager
    def _timed(self, part: str):
        """Add the process CPU time of the block to `cpu_s[part]`."""
        t0 = time.process_time()
        try:
            yield
        finally:
            self.cpu_s[part] = self.cpu_s.get(part, 0.0) + time.process_time() - t0

    def _offline(self, m: dict, eff: float, replicas: int) -> dict:
        """One of `replicas` replicas' Offline run (cached): offline_rps, steady_rps,
        output_tokens_per_s."""
        key, c = self.compiled(m, eff)
        key += (replicas,)
        if key not in self._sat:
            with self._timed("offline"):
                if self.protocol == "mlperf":
                    self._sat[key] = mlperf.offline_run(c, m["workload"], m["benchmark"], replicas,
                                                        beams=self.beams)
                else:
                    prompt, output = lengths(m["workload"], self.offline_n, seed=0)
                    rps = search.saturation_rps(c, prompt, output,
                                                mlperf.beam_width(m["benchmark"], self.beams))
                    self._sat[key] = {"offline_rps": rps, "steady_rps": rps,
                                      "output_tokens_per_s": rps * float(output.mean())}
        return self._sat[key]

    def offline(self, m: dict, eff: float) -> tuple[float, float]:
        """(samples/s, output tokens/s) of the whole system, all requests queued at once."""
        got = self._offline(m, eff, m["replicas"])
        return got["offline_rps"] * m["replicas"], got["output_tokens_per_s"] * m["replicas"]


def predict(rows: list[dict], pred: Predictor, eff: dict[str, float],
            fit: bool = False, only: str = "all") -> None:
    """Fill each modelled row's predictions at its family's efficiency (`fit`: only what
    the efficiency fit reads, the development rows' max QPS and Offline throughput;
    `only` "dev" / "held-out": that split's rows only, the others left unpredicted)."""
    only = "dev" if fit else only
    for r in rows:
        m = r["m"]
        if m["reason"] or only not in ("all", r["split"]):
            continue
        e = eff.get(m["engine"], 1.0)
        if r["scenario"] == "Server":
            slo = search.SLO(r["ttft_limit_ms"], r["tpot_limit_ms"])
            try:
                r["pred_qps"] = pred.max_qps(m, slo, e)
            except search.SLOUnreachableError:
                r["pred_qps"] = 0.0
            r["err_qps"] = r["pred_qps"] / r["target_qps"] - 1
            if fit:
                continue
            cap = r["max_num_seqs"] = pred.cap(m, slo, e) if r["pred_qps"] else MAX_SEQS
            r["max_num_seqs_tried"] = pred.tried(m, slo, e)
            at = pred.at_qps(m, r["target_qps"], e, cap=cap)
            r |= {f"pred_{k}": at[k] for k in KNEE_KEYS}
            r["err_tpot"] = r["pred_mean_tpot_ms"] / r["mean_tpot_ms"] - 1
            r |= knee_columns(r, pred.knee(m, slo, e) if r["pred_qps"] else None)
            r |= pred.conditioning(m, r["target_qps"], e, cap)
            _progress(r, f"max_num_seqs {cap}, QPS {_pct(r['err_qps'])}, mean TPOT "
                      f"{_pct(r['err_tpot'])}, at the knee {_pct(r['err_knee_tpot'])}, "
                      f"d log TPOT / d log QPS {r['dlog_tpot']:.1f}")
        else:
            rps, tps = pred.offline(m, e)
            measured, r["unit"] = ((r["tokens_per_s"], "tokens/s") if r["tokens_per_s"]
                                   else (r["samples_per_s"], "samples/s"))
            r["pred_offline"] = tps if r["unit"] == "tokens/s" else rps
            r["measured_offline"] = measured
            r["err_offline"] = r["pred_offline"] / measured - 1
            if not fit:
                _progress(r, f"Offline {_pct(r['err_offline'])}")


def nearer_limit(p99_ttft_ms: float, p99_tpot_ms: float, ttft_limit_ms: float,
                 tpot_limit_ms: float) -> str:
    """'TTFT' or 'TPOT': the p99 nearer its limit (the larger p99 / limit)."""
    return "TTFT" if p99_ttft_ms / ttft_limit_ms >= p99_tpot_ms / tpot_limit_ms else "TPOT"


def breaks(probe: dict | None, slo: search.SLO) -> str:
    """Which limit a failing capacity probe broke ('TTFT' / 'TPOT', both: the one further
    over), or 'throughput' for None: no probe failed, the search ended at its upper bound,
    the Offline rate."""
    if probe is None:
        return "throughput"
    return nearer_limit(probe["p99_ttft_ms"], probe["p99_tpot_ms"], slo.ttft_ms, slo.tpot_ms)


def knee_columns(r: dict, knee: dict | None) -> dict:
    """A Server row's knee columns from `Predictor.knee` (None: no rate meets the SLO, so no
    knee): knee_qps, knee_<KNEE_KEYS>, err_knee_tpot (its mean TPOT vs the measured),
    knee_bound (what ends the search above the knee, `Predictor.knee`) and bound (the
    measured p99 nearer its limit), and the error's parts (module doc): part_qps =
    log(TPOT at the submitted QPS / at the knee), part_knee = log(at the knee / measured)."""
    out = {"bound": nearer_limit(r["p99_ttft_ms"], r["p99_tpot_ms"], r["ttft_limit_ms"],
                                 r["tpot_limit_ms"])}
    if knee is None:
        return out | {"knee_qps": None, "err_knee_tpot": None, "knee_bound": None,
                      "part_qps": None, "part_knee": None} | {
                          f"knee_{k}": None for k in KNEE_KEYS}
    tpot = knee["mean_tpot_ms"]
    return out | {"knee_qps": knee["qps"], "err_knee_tpot": tpot / r["mean_tpot_ms"] - 1,
                  "knee_bound": knee["bound"],
                  "part_qps": math.log(r["pred_mean_tpot_ms"] / tpot),
                  "part_knee": math.log(tpot / r["mean_tpot_ms"])} | {
                      f"knee_{k}": knee[k] for k in KNEE_KEYS}


def _progress(r: dict, text: str) -> None:
    """One row's errors on stderr as they come (a full run takes a while)."""
    print(f"{r['split']} {r['benchmark']} {r['m']['gpu']} x {r['m']['accelerators']} "
          f"{r['submitter']}: {text}", file=sys.stderr, flush=True)


def fit_efficiency(rows: list[dict]) -> dict[str, float]:
    """Median measured / predicted (factor 1) over the development rows, per family."""
    ratios: dict[str, list[float]] = {}
    for r in rows:
        if r["m"]["reason"] or r["split"] != "dev":
            continue
        err = r.get("err_qps") if r["scenario"] == "Server" else r.get("err_offline")
        if err is not None and err > -1:
            ratios.setdefault(r["m"]["engine"], []).append(1 / (1 + err))
    return {fam: float(np.median(v)) for fam, v in ratios.items()}


def families(pairs: list[str]) -> dict[str, float]:
    """['trtllm=1.2', 'vllm=0.9'] -> {'trtllm': 1.2, 'vllm': 0.9}; SystemExit(2) naming a
    malformed pair."""
    out = {}
    for p in pairs:
        fam, _, val = p.partition("=")
        try:
            out[fam] = float(val)
        except ValueError:
            raise SystemExit(f"--efficiency {p!r}: write FAMILY=FACTOR, e.g. trtllm=1.3") from None
        if not fam or not out[fam] > 0:
            raise SystemExit(f"--efficiency {p!r}: write FAMILY=FACTOR with a factor > 0")
    return out


def max_seqs_arg(text: str) -> int | None:
    """--max-num-seqs: 'auto' -> None (tuned), else a positive integer."""
    try:
        return max_batch.parse_cap(text, MAX_SEQS)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def step_model(path: Path | None, runtime: Runtime | None) -> dict | None:
    """What `--step-model` ran, for the header and the JSON: None for physics only, else
    the folder, each engine family's fitted overhead terms (`OVERHEAD_TERMS`) and
    `other`, the terms a family with none fitted gets (`Runtime.engine_overhead()`)."""
    if runtime is None:
        return None
    return {"path": str(path), "overheads": runtime.overheads,
            "other": overhead_terms(runtime.engine_overhead())}


def step_model_text(model: dict | None) -> str:
    """`step_model`'s one header line."""
    if model is None:
        return "step time: physics only (no --step-model: no learned residual, no overhead)"
    fams = [f"{k} {describe_overhead(v)}" for k, v in sorted(model["overheads"].items())]
    fams.append(f"any other family {describe_overhead(model['other'])}")
    return f"step time: the step-time model {model['path']} (engine overheads: {'; '.join(fams)})"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.0f}%"


def tables(rows: list[dict]) -> str:
    """Markdown: one table per benchmark x GPU x scenario."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r["m"]["reason"] and ("pred_qps" in r or "pred_offline" in r):
            groups.setdefault((r["benchmark"], r["m"]["gpu"], r["scenario"]), []).append(r)
    for (bench, gpu, scen), rs in sorted(groups.items()):
        out.append(f"\n#### {bench} on {gpu}, {scen}\n")
        if scen == "Server":
            out.append("| submitter / system | split | GPUs (TP, max_num_seqs) "
                       "| QPS submitted / predicted "
                       "| mean TTFT ms meas / pred | p99 TTFT | mean TPOT ms | p99 TPOT "
                       "| at the predicted knee: mean / p99 TTFT ms, mean / p99 TPOT ms "
                       "(mean TPOT error) | bound: meas / above the knee | mean TPOT ms at QPS x "
                       f"{1 - COND_STEP:g} / x {1 + COND_STEP:g}, d log TPOT / d log QPS |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rs:
                out.append(
                    f"| {r['submitter']} / {r['system']} | {r['split']} | "
                    f"{r['m']['accelerators']} ({r['m']['tp']}, {r['max_num_seqs']}) | "
                    f"{r['target_qps']:.4g} / "
                    f"{r['pred_qps']:.4g} ({_pct(r['err_qps'])}) | {r['mean_ttft_ms']:.0f} / "
                    f"{r['pred_mean_ttft_ms']:.0f} | {r['p99_ttft_ms']:.0f} / "
                    f"{r['pred_p99_ttft_ms']:.0f} | {r['mean_tpot_ms']:.1f} / "
                    f"{r['pred_mean_tpot_ms']:.1f} ({_pct(r['err_tpot'])}) | "
                    f"{r['p99_tpot_ms']:.1f} / {r['pred_p99_tpot_ms']:.1f} | "
                    + ("-" if r["knee_qps"] is None else
                       f"{r['knee_mean_ttft_ms']:.0f} / {r['knee_p99_ttft_ms']:.0f}, "
                       f"{r['knee_mean_tpot_ms']:.1f} / {r['knee_p99_tpot_ms']:.1f} "
                       f"({_pct(r['err_knee_tpot'])})")
                    + f" | {r['bound']} / {r['knee_bound'] or '-'} | {r['tpot_lo_ms']:.1f} / "
                    f"{r['tpot_hi_ms']:.1f}, {r['dlog_tpot']:.1f} |")
        else:
            out.append("| submitter / system | split | GPUs (TP) | measured | predicted | "
                       "error |")
            out.append("|---|---|---|---|---|---|")
            for r in rs:
                out.append(f"| {r['submitter']} / {r['system']} | {r['split']} | "
                           f"{r['m']['accelerators']} ({r['m']['tp']}) | "
                           f"{r['measured_offline']:.4g} {r['unit']} | "
                           f"{r['pred_offline']:.4g} | {_pct(r['err_offline'])} |")
    return "\n".join(out)


def medians(rows: list[dict]) -> dict[str, dict[str, float | int]]:
    """Median |error| (%) and row counts per split of max QPS, mean TPOT (at the submitted
    QPS: the issue's metric), Offline, and mean TPOT at the predicted knee."""
    out = {}
    for part in ("dev", "held-out", "all"):
        mine = [r for r in rows if not r["m"]["reason"] and part in ("all", r["split"])]
        for name, key in (("max_qps", "err_qps"), ("mean_tpot", "err_tpot"),
                          ("offline", "err_offline"), ("knee_tpot", "err_knee_tpot")):
            v = [abs(r[key]) for r in mine if r.get(key) is not None]
            out.setdefault(part, {})[name] = (float(100 * np.median(v)) if v else None, len(v))
    return out


def conditioning(rows: list[dict]) -> dict[str, dict[str, float | int]]:
    """Per split and per benchmark, over the Server rows with a knee: rows; the median
    d log TPOT / d log QPS at the submitted QPS; the median |error| (%) of mean TPOT at the
    submitted QPS and at the predicted knee; `capacity_led`, the rows whose TPOT error is
    mostly the capacity's (|part_qps| > |part_knee|, `knee_columns`); `spread`, the median
    p99 / mean TPOT at the predicted knee, beside the measured one's (`measured_spread`)."""
    out = {}
    groups = [(part, lambda r, p=part: p in ("all", r["split"]))
              for part in ("dev", "held-out", "all")]
    groups += [(b, lambda r, b=b: r["benchmark"] == b)
               for b in sorted({r["benchmark"] for r in rows if r.get("knee_qps")})]
    for name, keep in groups:
        mine = [r for r in rows if r.get("knee_qps") and keep(r)]
        if not mine:
            continue
        out[name] = {"rows": len(mine),
                     "dlog_tpot": float(np.median([r["dlog_tpot"] for r in mine])),
                     "mean_tpot": float(100 * np.median([abs(r["err_tpot"]) for r in mine])),
                     "knee_tpot": float(100 * np.median([abs(r["err_knee_tpot"])
                                                         for r in mine])),
                     "capacity_led": sum(abs(r["part_qps"]) > abs(r["part_knee"])
                                         for r in mine),
                     "spread": float(np.median([r["knee_p99_tpot_ms"] / r["knee_mean_tpot_ms"]
                                                for r in mine])),
                     "measured_spread": float(np.median([r["p99_tpot_ms"] / r["mean_tpot_ms"]
                                                         for r in mine]))}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=800, help="requests per Server probe")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--offline-requests", type=int, default=2000)
    ap.add_argument("--protocol", choices=("mlperf", "short"), default="mlperf",
                    help="run lengths: MLPerf's (600 s, min_query_count) or --requests / "
                    "--offline-requests (Predictor)")
    ap.add_argument("--beams", choices=("one", "mlperf"), default="mlperf",
                    help="sequences per sample: MLPerf's beam widths (GPT-J 4; the "
                    "default), or one")
    ap.add_argument("--server-seconds", choices=mlperf.SERVER_RULES, default="loadgen",
                    help="Server run length (protocol mlperf): LoadGen's 600 s for every row "
                    "(the default) or the engine family's harness's (2400 s for "
                    "TensorRT-LLM's Llama-2-70B, else 600 s; simulator.mlperf.server_seconds)")
    ap.add_argument("--rows", choices=("all", "dev", "held-out"), default="all",
                    help="predict every modelled row, or one split's only (dev: explore a "
                    "change without looking at the held-out rows)")
    ap.add_argument("--efficiency", nargs="+", metavar="FAMILY=F",
                    help="use these factors instead of fitting them (e.g. those a --rows "
                    "dev run fitted, to predict the held-out rows once)")
    ap.add_argument("--max-num-seqs", default="auto", type=max_seqs_arg,
                    help="max_num_seqs of every Server run: auto (the default: tuned per "
                    f"deployment and SLO, simulator.max_batch) or a number ({MAX_SEQS}: the "
                    "KV cache bounds the batch)")
    ap.add_argument("--step-model", type=Path, metavar="DIR",
                    help="saved step_time model (`servecast train step-time`): learned "
                    "operator residuals and each engine family's fitted overhead in every "
                    "compiled replica (default: physics only)")
    ap.add_argument("--out", type=Path, help="write every row's numbers as JSON")
    args = ap.parse_args(argv)
    try:
        runtime = load_runtime(args.step_model)
    except ServecastError as e:
        ap.error(f"--step-model: {e}")
    model = step_model(args.step_model, runtime)
    t0, c0 = time.perf_counter(), time.process_time()
    rows = load_rows()
    split(rows)
    for r in rows:
        r["m"] = model_row(r)
    pred = Predictor(args.requests, args.seeds, args.offline_requests, args.protocol,
                     1 if args.beams == "one" else None, args.max_num_seqs, runtime,
                     args.server_seconds)
    if args.efficiency:
        eff = families(args.efficiency)
    else:
        predict(rows, pred, {}, fit=True)
        eff = fit_efficiency(rows)
    predict(rows, pred, eff, only=args.rows)
    seconds = time.perf_counter() - t0
    modelled = [r for r in rows if not r["m"]["reason"]]
    print(f"MLPerf v4.1 LLM rows: {len(rows)}, modelled {len(modelled)} "
          f"({sum(r['split'] == 'dev' for r in modelled)} development, "
          f"{sum(r['split'] == 'held-out' for r in modelled)} held out); {seconds:.0f} s")
    print(step_model_text(model))
    print(f"Server run length (--server-seconds): {args.server_seconds}")
    print("engine efficiency (given)" if args.efficiency else
          "engine efficiency (fitted on development rows):",
          ", ".join(f"{k} {v:.3f}" for k, v in sorted(eff.items())) or "none")
    print(tables(rows))
    print("\n#### Median |error| (%), rows\n")
    print("| rows | max QPS | mean TPOT | Offline throughput | mean TPOT at the predicted "
          "knee (not the issue's metric) |")
    print("|---|---|---|---|---|")
    med = medians(rows)
    for part, m in med.items():
        print(f"| {part} | " + " | ".join(
            "-" if v is None else f"{v:.1f} ({n})" for v, n in m.values()) + " |")
    cond = conditioning(rows)
    print("\n#### Conditioning at the submitted QPS, Server rows with a knee\n")
    print("| rows | count | median d log TPOT / d log QPS | median abs. error % of mean TPOT at "
          "submitted QPS / at the knee | TPOT error mostly the capacity's | median p99 / "
          "mean TPOT at the knee, predicted / measured |")
    print("|---|---|---|---|---|---|")
    for part, c in cond.items():
        print(f"| {part} | {c['rows']} | {c['dlog_tpot']:.2f} | {c['mean_tpot']:.1f} / "
              f"{c['knee_tpot']:.1f} | {c['capacity_led']} | {c['spread']:.2f} / "
              f"{c['measured_spread']:.2f} |")
    reasons: dict[str, int] = {}
    for r in rows:
        if r["m"]["reason"]:
            reasons[r["m"]["reason"]] = reasons.get(r["m"]["reason"], 0) + 1
    print("\n#### Rows not modelled\n")
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"- {n} x {why}")
    cpu = pred.cpu_s | {"total": time.process_time() - c0}
    print(f"\nCPU seconds: {cpu['total']:.0f} in all, of which " + ", ".join(
        f"{k} {v:.0f}" for k, v in sorted(pred.cpu_s.items())))
    result = {"step_model": model, "server_seconds": args.server_seconds, "efficiency": eff,
              "medians": med, "conditioning": cond,
              "seconds": seconds, "cpu_seconds": cpu, "rows": [
        {k: v for k, v in r.items() if k != "m"} | r["m"] for r in rows]}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
