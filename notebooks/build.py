"""Regenerate the topic notebooks (02-05) from the cells below, unexecuted, like
01_quickstart (the test suite executes them): `python notebooks/build.py`.

Each notebook starts from a fresh store in `$SERVECAST_NOTEBOOK_OUT` (or a temp folder),
ingests one real shared dataset and uses fast settings so it runs in well under 2 minutes.
`SERVECAST_NOTEBOOK_QUICK=1` (set by tests/test_notebooks.py) trains and replays on smaller
slices of the same real data: every cell still runs, on less of it; unset, a reader gets the
full run the text describes.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
import tempfile
from pathlib import Path

from servecast.config import data_dir
from servecast.store import Store

DATA = data_dir()                      # ../shared/datasets or $SERVECAST_DATA
WORK = Path(os.environ.get("SERVECAST_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="servecast-"))
WORK.mkdir(parents=True, exist_ok=True)
# SERVECAST_NOTEBOOK_QUICK=1: smaller slices of the same data (the test suite's setting)
QUICK = os.environ.get("SERVECAST_NOTEBOOK_QUICK", "0") == "1"
store = Store(WORK / "{name}.duckdb")   # a fresh store for this notebook"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "02_output_length_whatif": [
        ("md", """\
# Output length and what-if scheduling
A LightGBM quantile model predicts each request's output length (p50/p90/p99, tokens) from
its metadata on the Azure LLM conversation trace (Splitwise), is compared with baselines on a
time-ordered split, and its predictions drive a what-if replay of scheduling policies."""),
        ("code", SETUP.format(name="output_length")),
        ("code", """\
r = store.ingest("azure-llm", DATA / "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
                 trace="azure_conv")
print(r.rows, "rows,", r.rejected, "rejected")"""),
        ("md", "## Train (fast settings, 8,000 sampled requests; 3,000 if QUICK) and evaluate"),
        ("code", """\
from servecast.predictors.output_length.train import summary, train_output_length

res = train_output_length(store, "azure_conv", WORK / "models" / "output_length", fast=True,
                          max_rows=3000 if QUICK else 8000)
print(res["split"], f"- fit {res['seconds']:.1f} s")
summary(res)"""),
        ("md", """\
## Calibration and errors
Coverage of a quantile = share of held-out requests at or below it; the diagonal is ideal."""),
        ("code", """\
from servecast.analytics import prediction_plots as pp
from servecast.predictors.output_length.core import completed

pp.calibration({"metadata": res["metrics"], **res["baselines"]})"""),
        ("code", """\
test = completed(res["test"])
pred = res["model"].predict(test)
pp.prediction_errors(test["output_tokens"].to_numpy(), pred["p50"].to_numpy(),
                     pred["p90"].to_numpy())"""),
        ("md", "The saved model is what schedulers load, through the Estimator facade:"),
        ("code", """\
from servecast.estimator import Estimator

est = Estimator.load(WORK / "models")
est.output_length(prompt_tokens=1000)"""),
        ("md", """\
## What-if: one serving instance, continuous batching
The first 500 held-out requests (200 if QUICK) are replayed at 0.7x and 1.1x the instance's
saturation throughput: FCFS, shortest-predicted-first, oracle SJF, and KV admission reserving the
predicted p90 or the worst case."""),
        ("code", """\
import polars as pl

from servecast.simulator import no_gain_reason, sjf_gain, whatif

n = 200 if QUICK else 500
runs = {load: whatif(test[:n], pred["p50"][:n].to_numpy(), pred["p90"][:n].to_numpy(),
                     load=load) for load in (0.7, 1.1)}
for load, sim in runs.items():
    gain = sjf_gain(sim)  # None where the oracle gains nothing: nothing waited
    print(f"load {load}: " + (no_gain_reason(sim) if gain is None else
                              f"predicted SJF captures {gain:.0%} of oracle SJF's gain"))
pl.concat(runs.values()).select("load", "policy", "mean_jct_s", "p99_jct_s", "mean_ttft_s",
                                "preemptions")"""),
        ("code", "pp.whatif_policies(runs[1.1])"),
    ],
    "03_kernel_latency_unseen_gpu": [
        ("md", """\
# Kernel latency on an unseen GPU
NeuSight's measured kernels (bmm, linear, conv, norms, element-wise ops) train small MLPs
that correct a roofline model: latency = roofline(op, shape, spec) x exp(MLP(features)),
averaged over members that read the device-relative physics and members that read the shape
alone. The learner sees a device only through its spec sheet, so it can estimate a GPU it
has never measured. Here the A100-PCIE-40GB is held out, then H100 and L4 (no measurements at all) are
estimated from their specs."""),
        ("code", SETUP.format(name="kernels")),
        ("code", """\
r = store.ingest("neusight", DATA / "gpu/neusight", trace="neusight")
print(r.rows, "kernels,", r.rejected, "rejected")
store.sql("SELECT device, count(*) AS kernels FROM kernel_latencies GROUP BY ALL ORDER BY 1")"""),
        ("md", """\
## Train without the A100-PCIE-40GB
Fast settings: 2 epochs on 20,000 kernels, 3 members per view (QUICK: 1 epoch on 5,000
kernels, one member per view; evaluated on 5,000 held-out kernels instead of 20,000)."""),
        ("code", """\
import polars as pl

from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor
from servecast.predictors.kernel_latency.train import kernel_training_data

HELD_OUT = "NVIDIA A100-PCIE-40GB"
ROWS, EPOCHS, MEMBERS = (5_000, 1, 1) if QUICK else (20_000, 2, 3)
frame, devices = kernel_training_data(store, vidur=False)
train = frame.filter(pl.col("device") != HELD_OUT)
test = frame.filter(pl.col("device") == HELD_OUT).sample(ROWS, seed=0)
model = KernelLatencyPredictor(devices, epochs=EPOCHS, max_rows=ROWS,
                               ensemble=MEMBERS).fit(train)
ev = model.evaluate(test)
print(f"{HELD_OUT}, never seen in training: MdAPE {ev['mdape']:.1f}% "
      f"(roofline alone {ev['roofline_mdape']:.1f}%)")
pl.DataFrame([{"op": k, **v} for k, v in ev["per_op"].items()])"""),
        ("code", """\
from servecast.analytics import prediction_plots as pp

bmm = test.filter(pl.col("op") == "bmm").head(1500)
pp.predicted_vs_measured(bmm["latency_ms"].to_numpy(),
                         {"learned": model.predict(bmm)["latency_ms"].to_numpy(),
                          "roofline": model.predict_roofline(bmm, devices)},
                         f"bmm on {HELD_OUT} (held out)")"""),
        ("md", """\
## Estimate GPUs with no measurements, from their spec sheets
The saved model is loaded through the Estimator (numpy only); a spec is a NeuSight
device-config dict (memory GB, bandwidth GB/s, SMs, cores/SM, MHz, fp32 GFLOP/s, L2 MB)."""),
        ("code", """\
from servecast.estimator import Estimator
from servecast.predictors.kernel_latency.data import device_specs

model.save(WORK / "models" / "kernel_latency")
est = Estimator.load(WORK / "models")
specs = device_specs(store)
shape = [8, 1024, 4096, 4096]          # bmm B, M, N, K
rows = [{"device": name, "method": m, "ms": f("bmm", shape, spec)}
        for name, spec in specs.items()
        for m, f in (("learned", est.kernel_latency),
                     ("roofline", est.runtime("kernel_latency").roofline))]
estimates = pl.DataFrame(rows).sort("device")
estimates.pivot(on="method", index="device", values="ms")"""),
        ("code", 'pp.device_estimates(estimates, "bmm 8x1024x4096x4096 per device")'),
    ],
    "04_moe_gamma_eff": [
        ("md", """\
# MoE routing: load imbalance and the congestion coefficient gamma_eff
Expert-assignment counts of OLMoE-1B-7B (64 experts, top-8) and Mixtral-8x7B (8 experts,
top-2) per domain and layer: how unevenly experts are loaded, and how well a congestion-game
equilibrium with one coefficient gamma_eff transfers loads across domains. Then gamma_eff is
tracked over the training of a tiny MoE language model."""),
        ("code", SETUP.format(name="moe")),
        ("code", """\
r = store.ingest("olmoe-routing", DATA / "moe/olmoe_routing", trace="olmoe_routing")
print(r.rows, "rows,", r.rejected, "rejected")"""),
        ("md", "## Imbalance per model, layer and domain"),
        ("code", """\
import polars as pl

from servecast.analytics import moe, moe_plots

imb = moe.imbalance(store, "olmoe_routing")
imb.group_by("model", "assignment", "layer").agg(
    pl.col("maxvio").mean(), pl.col("gini").mean(), pl.col("norm_entropy").mean()).sort(
    "model", "assignment", "layer")"""),
        ("code", """\
shares = moe.shares(store, "olmoe_routing")
olmoe = shares.filter((pl.col("model") == "olmoe") & (pl.col("assignment") == "topk"))
moe_plots.share_heatmap(olmoe, "OLMoE top-8: load per expert relative to an even split")"""),
        ("md", """\
## gamma_eff from the counts: leave-one-domain-out
Each domain's loads are predicted from the other domains' with the equilibrium model;
(beta, gamma_eff) are picked on the training domains only. L1 of load shares, lower is
better; ratio < 1 means the congestion model beats the best baseline."""),
        ("code", """\
from servecast.predictors.moe_congestion.domains import domain_transfer, transfer_summary

transfer = domain_transfer(shares)
transfer_summary(transfer)"""),
        ("md", """\
## gamma_eff over training: a tiny small-MoE run
2 blocks, 8 experts, top-1, trained 24 steps on ShareGPT text (CPU, well under a minute;
QUICK: 8 steps), routing snapshots at 3 checkpoints; gamma_eff is fitted per checkpoint and
layer with a bootstrap CI, and its trend is segmented into phases (surge / stabilization / relaxation).
Real runs use hundreds of steps (`servecast moe train-small`)."""),
        ("code", """\
from servecast.predictors.moe_congestion.run import RunConfig, train_small_moe
from servecast.predictors.moe_congestion.trajectory import phases, trajectory

run = train_small_moe(WORK / "moe_run", RunConfig(
    alpha=0.01, steps=8 if QUICK else 24, snapshots=2, eval_windows=16, train_conversations=40,
    eval_conversations=10, batch_size=16))
traj = trajectory(run, n_bootstrap=3, n_types=4)
segs = phases(traj)
traj.select("step", "layer", "gamma", "gamma_lo", "gamma_hi", "l1_multi", "l1_softmax",
            "maxvio")"""),
        ("code", "moe_plots.trajectory_figure(traj, segs)"),
    ],
    "05_interference": [
        ("md", """\
# VM interference: predict a VM's performance from its own metrics
Co-located tenants slow a VM down without any change of its own. On the Azure VM Noise data
(short-lived B8ms and D8s_v5 VMs), the micro-benchmarks a VM ran before an application
benchmark form a window of metrics; the label is the application's performance relative to
its SKU-and-region median (perf in (0, 1], 1 = no degradation). A CloudFormer-style
dual-branch Transformer (attention over steps and across metrics) is compared with gradient
boosting on window statistics and the training mean (fast settings, the last 2,000 VMs of
each SKU before December 2023; QUICK: the last 150 and 1 epoch; the full benchmark's numbers
are in the README)."""),
        ("code", SETUP.format(name="interference")),
        ("code", """\
r = store.ingest("azure-vm-noise", DATA / "vm/azure_vm_noise", trace="azure_vm_noise")
print(r.rows, "benchmark runs,", r.rejected, "rejected")"""),
        ("md", """\
## How noisy is a benchmark?
Median over benchmarks of the coefficient of variation and of the 1st / 99th percentile
relative to the median: the burstable B8ms varies far more than the dedicated D8s_v5, and
short-lived VMs more than long-lived ones."""),
        ("code", """\
from servecast.analytics.vm_noise import by_sku

by_sku(store, "azure_vm_noise")"""),
        ("md", """\
## The fingerprint task
Windows are long frames `window_id, t, metric, value`, the format any metric source can use
(another metric set or sampling rate: nothing assumes these names). Each window holds every
micro-benchmark run before the application (`t` = their order), then one step naming the
application (`app:...`) with the VM's age in hours (`vm_age_h`); `sku:...` marks the SKU.
Splits follow time: train < val < test, no VM in two splits."""),
        ("code", """\
import polars as pl

from servecast.predictors.interference.tasks import fingerprint_task

task = fingerprint_task(store, max_instances=150 if QUICK else 2000, until="2023-12-01")
first = task.labels["window_id"][0]
print(task.labels.filter(pl.col("window_id") == first))
task.metrics.filter(pl.col("window_id") == first).sort("t")"""),
        ("code", "task.summary()"),
        ("md", "## Train on the train split, test MAE in percentage points of perf"),
        ("code", """\
from dataclasses import replace

from servecast.predictors.interference import evaluate as ev
from servecast.predictors.interference.settings import PRESET

settings = replace(PRESET.fast, epochs=1) if QUICK else PRESET.fast
table = ev.compare(task, ("dual", "gbm", "mean"), settings, out=WORK / "runs")
table.select("model", "group", "n", "mae_pp", "bias_pp", "fit_s")"""),
        ("code", """\
from servecast.analytics import prediction_plots as pp
from servecast.predictors.interference.predictor import InterferencePredictor

test_metrics, test_labels = task.part("test")
pred = {name: test_labels.join(InterferencePredictor.load(WORK / "runs" / "fingerprint" / name)
                               .predict(test_metrics), on="window_id", suffix="_pred")
        ["perf_pred"].to_numpy() for name in ("dual", "gbm")}
pp.predicted_vs_measured(test_labels["perf"].to_numpy(), pred, "fingerprint test windows",
                         unit="perf", log=False)"""),
        ("md", """\
## The Estimator, as a scheduler or autoscaler calls it
`Estimator.interference` takes one window: a long frame like the one above, or a mapping
metric -> recent values. Collect windows on your own hosts with `servecast collect
host-metrics` / `servecast collect interference` and train on them with `servecast train
interference --task FILE --labels LABELS`."""),
        ("code", """\
import shutil

from servecast.estimator import Estimator

shutil.copytree(WORK / "runs" / "fingerprint" / "dual", WORK / "models" / "interference",
                dirs_exist_ok=True)
est = Estimator.load(WORK / "models")
window = test_metrics.filter(pl.col("window_id") == test_labels["window_id"][0])
print(f"one window: predicted perf {est.interference(window):.3f}, "
      f"measured {test_labels['perf'][0]:.3f}")
ids = test_labels["window_id"][:8].implode()
(est.interference_batch(test_metrics.filter(pl.col("window_id").is_in(ids)))
 .join(test_labels, on="window_id", suffix="_measured"))"""),
    ],
}


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """One notebook from (kind, source) cells, with 01_quickstart's kernel metadata."""
    nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                             for kind, src in cells])
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating changes nothing
        cell.id = f"cell-{i:02d}"
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python",
                                  "name": "python3"}}
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(name, cells), path)
        print(path)


if __name__ == "__main__":
    main()
