"""Validation of capacity search against MLPerf Inference v4.1 LLM results (issue 24).

Per MLPerf row the simulator can model (`servecast.simulator.mlperf`: documented rules, no
system named): Server rows get the predicted max SLO-compliant QPS (capacity search under
the row's own p99 TTFT / TPOT limits) beside the submitted QPS, and the predicted mean / p99
TTFT and TPOT at the submitted QPS beside the measured; Offline rows the predicted
throughput (tokens/s; GPT-J rows report samples/s, which is what MLPerf records for it)
beside the measured. One table per benchmark x GPU, then the median |error| of max QPS,
of mean TPOT and of Offline throughput on the development and the held-out rows.

Engine efficiency: one factor per engine family (iteration time = step time / factor),
fitted on the DEVELOPMENT rows only as the median of measured / predicted (factor 1) over
their Server max QPS and Offline throughput; rows of a family with no development row keep
factor 1. Split by submitter: submitters sorted by name, even positions development, odd
held out (whole submitters, so no system is on both sides).

Run lengths (`--protocol`): "mlperf" (default) runs every row as long as MLPerf's LoadGen
rules make a submission run (`servecast.simulator.mlperf`: 600 s Server probes, Offline
runs of min_query_count raised to 600 s); "short" runs `--requests` per Server probe and
`--offline-requests` per Offline run (the earlier protocol). Either way each sample decodes
with MLPerf's beam search (`--beams mlperf`, the default: GPT-J's 4 beams) or, with `--beams
one`, as one sequence.

    .venv/bin/python benchmarks/capacity_mlperf.py [--protocol mlperf|short] [--seeds 2]
        [--requests 800] [--offline-requests 2000] [--beams one|mlperf]
        [--rows all|dev|held-out] [--efficiency FAMILY=F ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from servecast.datasets.catalog import shared_path
from servecast.simulator import mlperf, search
from servecast.simulator.deployment import Deployment
from servecast.simulator.mlperf import MAX_SEQS, model_row
from servecast.simulator.workloads import lengths, poisson_arrivals
from servecast.store import Store


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
    600 s, Server probes of 600 s of arrivals, the search bounded by the Offline run's
    steady rate). "short": `requests` per Server probe, `offline_requests` per Offline run,
    the search bounded by its probe sample's Offline throughput (the earlier protocol)."""

    def __init__(self, requests: int, seeds: int, offline_requests: int,
                 protocol: str = "mlperf", beams: int | None = None):
        self.requests, self.seeds, self.offline_n = requests, seeds, offline_requests
        self.protocol, self.beams = protocol, beams
        self._compiled, self._cap, self._sat, self._at = {}, {}, {}, {}

    def compiled(self, m: dict, eff: float):
        key = (m["model"], m["gpu"], m["tp"], m["dtype"], m["kv_cache_dtype"], m["engine"], eff)
        if key not in self._compiled:
            self._compiled[key] = search.compile_replica(Deployment(
                model=m["model"], gpu=m["gpu"], tp=m["tp"], dtype=m["dtype"],
                engine=m["engine"], max_num_seqs=MAX_SEQS, efficiency=eff,
                kv_cache_dtype=m["kv_cache_dtype"]))
        return key, self._compiled[key]

    def max_qps(self, m: dict, slo: search.SLO, eff: float) -> float:
        """Per-replica capacity x replicas (random routing: Poisson per replica)."""
        key, c = self.compiled(m, eff)
        k = (key, slo)
        if k not in self._cap:
            if self.protocol == "mlperf":
                upper = self._offline(m, eff, 1)["steady_rps"]  # per replica
                sample, bound = mlperf.server_sample(m["workload"], upper), {"upper_rps": upper}
            else:
                sample, bound = search.poisson_sample(m["workload"], self.requests), {}
            self._cap[k] = search.capacity(c, slo, sample, seeds=self.seeds, **bound).rate
        return self._cap[k] * m["replicas"]

    def at_qps(self, m: dict, qps: float, eff: float) -> dict:
        key, c = self.compiled(m, eff)
        if self.protocol == "mlperf":
            k = (key, qps / m["replicas"])
            if k not in self._at:
                self._at[k] = mlperf.server_run(c, m["workload"], qps, m["replicas"])
            return self._at[k]
        prompt, output = lengths(m["workload"], self.requests, seed=0)
        arrive = poisson_arrivals(self.requests, qps / m["replicas"], 0)
        return search.probe(c, arrive, prompt, output)

    def _offline(self, m: dict, eff: float, replicas: int) -> dict:
        """One of `replicas` replicas' Offline run (cached): offline_rps, steady_rps,
        output_tokens_per_s."""
        key, c = self.compiled(m, eff)
        key += (replicas,)
        if key not in self._sat:
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
            at = pred.at_qps(m, r["target_qps"], e)
            r |= {f"pred_{k}": at[k] for k in ("mean_ttft_ms", "p99_ttft_ms",
                                               "mean_tpot_ms", "p99_tpot_ms")}
            r["err_tpot"] = r["pred_mean_tpot_ms"] / r["mean_tpot_ms"] - 1
            _progress(r, f"QPS {_pct(r['err_qps'])}, mean TPOT {_pct(r['err_tpot'])}")
        else:
            rps, tps = pred.offline(m, e)
            measured, r["unit"] = ((r["tokens_per_s"], "tokens/s") if r["tokens_per_s"]
                                   else (r["samples_per_s"], "samples/s"))
            r["pred_offline"] = tps if r["unit"] == "tokens/s" else rps
            r["measured_offline"] = measured
            r["err_offline"] = r["pred_offline"] / measured - 1
            if not fit:
                _progress(r, f"Offline {_pct(r['err_offline'])}")


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
            out.append("| submitter / system | split | GPUs (TP) | QPS submitted / predicted "
                       "| mean TTFT ms meas / pred | p99 TTFT | mean TPOT ms | p99 TPOT |")
            out.append("|---|---|---|---|---|---|---|---|")
            for r in rs:
                out.append(
                    f"| {r['submitter']} / {r['system']} | {r['split']} | "
                    f"{r['m']['accelerators']} ({r['m']['tp']}) | {r['target_qps']:.4g} / "
                    f"{r['pred_qps']:.4g} ({_pct(r['err_qps'])}) | {r['mean_ttft_ms']:.0f} / "
                    f"{r['pred_mean_ttft_ms']:.0f} | {r['p99_ttft_ms']:.0f} / "
                    f"{r['pred_p99_ttft_ms']:.0f} | {r['mean_tpot_ms']:.1f} / "
                    f"{r['pred_mean_tpot_ms']:.1f} ({_pct(r['err_tpot'])}) | "
                    f"{r['p99_tpot_ms']:.1f} / {r['pred_p99_tpot_ms']:.1f} |")
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
    """Median |error| (%) and row counts per split of max QPS, mean TPOT, Offline."""
    out = {}
    for part in ("dev", "held-out", "all"):
        mine = [r for r in rows if not r["m"]["reason"] and part in ("all", r["split"])]
        for name, key in (("max_qps", "err_qps"), ("mean_tpot", "err_tpot"),
                          ("offline", "err_offline")):
            v = [abs(r[key]) for r in mine if r.get(key) is not None]
            out.setdefault(part, {})[name] = (float(100 * np.median(v)) if v else None, len(v))
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
    ap.add_argument("--rows", choices=("all", "dev", "held-out"), default="all",
                    help="predict every modelled row, or one split's only (dev: explore a "
                    "change without looking at the held-out rows)")
    ap.add_argument("--efficiency", nargs="+", metavar="FAMILY=F",
                    help="use these factors instead of fitting them (e.g. those a --rows "
                    "dev run fitted, to predict the held-out rows once)")
    ap.add_argument("--out", type=Path, help="write every row's numbers as JSON")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = load_rows()
    split(rows)
    for r in rows:
        r["m"] = model_row(r)
    pred = Predictor(args.requests, args.seeds, args.offline_requests, args.protocol,
                     1 if args.beams == "one" else None)
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
    print("engine efficiency (given)" if args.efficiency else
          "engine efficiency (fitted on development rows):",
          ", ".join(f"{k} {v:.3f}" for k, v in sorted(eff.items())) or "none")
    print(tables(rows))
    print("\n#### Median |error| (%), rows\n")
    print("| rows | max QPS | mean TPOT | Offline throughput |")
    print("|---|---|---|---|")
    med = medians(rows)
    for part, m in med.items():
        print(f"| {part} | " + " | ".join(
            "-" if v is None else f"{v:.1f} ({n})" for v, n in m.values()) + " |")
    reasons: dict[str, int] = {}
    for r in rows:
        if r["m"]["reason"]:
            reasons[r["m"]["reason"]] = reasons.get(r["m"]["reason"], 0) + 1
    print("\n#### Rows not modelled\n")
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"- {n} x {why}")
    result = {"efficiency": eff, "medians": med, "seconds": seconds, "rows": [
        {k: v for k, v in r.items() if k != "m"} | r["m"] for r in rows]}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
