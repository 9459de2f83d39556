"""MoE routing: expert-load heatmaps and imbalance per layer/domain (OLMoE / Mixtral routing
counts), gamma_eff from leave-one-domain-out fits on those counts, and the gamma_eff
trajectory over the training of a small MoE (a saved run, or a tiny one started here)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
import streamlit as st

from servecast.analytics import interactive as charts
from servecast.app import common
from servecast.predictors.moe_congestion.domains import domain_transfer, transfer_summary

#: a tiny small-MoE run for the dashboard (about a minute on 2 CPU cores)
TINY = dict(alpha=0.01, steps=24, snapshots=3, eval_windows=16, train_conversations=40,
            eval_conversations=10, batch_size=16)

trace = common.page_trace("MoE", "moe_expert_loads")
T = common.trace_analysis

shares = T("moe.shares", trace)
groups = shares.select("model", "assignment").unique().sort(["model", "assignment"])
c1, c2 = st.columns(2)
model = c1.selectbox("model", groups["model"].unique(maintain_order=True).to_list(),
                     key="moe_model")
assigns = groups.filter(pl.col("model") == model)["assignment"].to_list()
assign = c2.selectbox("assignment", assigns, key="moe_assign")
sel = (pl.col("model") == model) & (pl.col("assignment") == assign)

st.subheader("Expert loads")
common.chart(charts.share_heatmap(shares.filter(sel), f"{model} ({assign}): load per "
                                      "expert relative to an even split"),
              f"{trace}_{model}_{assign}_heatmap")

st.subheader("Imbalance per layer and domain")
imb = T("moe.imbalance", trace)
common.chart(charts.imbalance_figure(imb.filter(sel)), f"{trace}_{model}_{assign}_imbalance")
common.table(imb.filter(sel).drop("checkpoint"), f"{trace}_{model}_{assign}_imbalance",
             "maxvio = max/mean - 1; gini, normalized entropy, cv; dead = experts with no token")

st.subheader("gamma_eff from the routing counts")
st.caption("Leave-one-domain-out: each domain's loads are predicted from the other domains' "
           "with the congestion equilibrium; (beta, gamma_eff) are chosen on the training "
           "domains only. L1 distance of load shares (0-2), lower is better.")
transfer = st.cache_data(show_spinner=False, max_entries=16)(domain_transfer)(shares)
common.table(transfer_summary(transfer), f"{trace}_transfer_summary",
             "Mean held-out L1 per model and assignment; ratio < 1: congestion model better "
             "than the best baseline")
common.table(transfer.filter(sel).select("layer", "held_out", "gamma", "beta", "l1_uniform",
                                         "l1_mean_domains", "l1_congestion"),
             f"{trace}_{model}_{assign}_gamma", f"{model} ({assign}): gamma_eff per layer and "
             "held-out domain")

# -- trajectory over training -----------------------------------------------------------------
st.subheader("gamma_eff trajectory over training (small MoE)")


@st.cache_data(show_spinner="fitting gamma_eff per checkpoint ...", max_entries=8)
def run_trajectory(run: str, mtime: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    from servecast.predictors.moe_congestion.trajectory import phases, trajectory

    traj = trajectory(run, n_bootstrap=5, n_types=4)
    return traj, phases(traj)


@st.cache_resource(show_spinner="training a tiny small MoE on ShareGPT text (about a minute) "
                   "...", max_entries=1)
def tiny_run() -> str:
    from servecast.predictors.moe_congestion.run import RunConfig, train_small_moe

    return str(train_small_moe(tempfile.mkdtemp(prefix="servecast-moe-"), RunConfig(**TINY)))


run_dir = Path(st.sidebar.text_input("small-MoE run dir", str(common.out_dir() / "moe" / "run"),
                                     key="moe_run_dir"))
if not (run_dir / "run.json").is_file():
    st.info(f"No small-MoE run in `{run_dir}` (`servecast demo` or `servecast moe train-small "
            "--out RUN` writes one). Run a tiny one here to see the trajectory.")
    if not common.clicked("Run a tiny small-MoE training", "moe_tiny", "tiny"):
        st.stop()
    run_dir = Path(tiny_run())
traj, segs = run_trajectory(str(run_dir), (run_dir / "run.json").stat().st_mtime)
last = traj.filter(pl.col("step") == traj["step"].max())
common.metrics({"checkpoints": traj["step"].n_unique(), "layers": traj["layer"].n_unique(),
                "final gamma_eff (median over layers)": float(last["gamma"].median()),
                "final maxvio": float(last["maxvio"].mean())})
common.chart(charts.trajectory_figure(traj, segs), "gamma_trajectory")
common.table(traj.select("step", "layer", "gamma", "gamma_lo", "gamma_hi", "gamma_single",
                         "l1_multi", "l1_softmax", "maxvio", "eval_loss"), "gamma_trajectory",
             f"Per checkpoint and layer (run `{run_dir.name}`); held-out L1 of load shares")
if segs.height:
    common.table(segs, "gamma_phases", "Phases of the gamma_eff trend (piecewise-linear fit)")
