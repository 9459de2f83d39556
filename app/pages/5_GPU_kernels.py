"""GPU kernels: predicted vs measured latency on a NeuSight-format trace (roofline physics
model always; the learned cross-device model when one is trained), and an estimate for an
unseen device from its spec sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import streamlit as st

from servecast.analytics import interactive as charts
from servecast.app import common
from servecast.errors import ServecastError
from servecast.predictors.kernel_latency.data import device_specs, spec_json
from servecast.predictors.kernel_latency.ops import OP_NAMES, shape_columns
from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor
from servecast.predictors.kernel_latency.specs import SPEC_KEYS, TENSOR_KEY
from servecast.predictors.metrics import mdape

#: shape defaults for the estimate form (a 4k-wide LLM layer, batch 8)
SHAPE_DEFAULTS = {"B": 8, "M": 1024, "N": 4096, "K": 4096, "H": 4096, "in_channels": 64,
                  "out_channels": 64, "kernel_size": 3, "input_size": 56, "stride": 1,
                  "padding": 1}
SAMPLE = 1500  # measured kernels compared per (device, op)

trace = common.page_trace("GPU kernels", "kernel_latencies", sources=("neusight",))


@st.cache_data(show_spinner=False, max_entries=8)
def load_specs(path: str) -> dict[str, dict]:
    """Device name -> spec sheet (with TensorFLOPs where given), sorted by name; only full
    sheets (every SPEC_KEYS field: the roofline needs them; the GPU catalog's entries without
    SingleFLOPs are left out)."""
    specs = common.on_store(path, device_specs)
    return {d: s for d, s in sorted(specs.items()) if all(k in s for k in SPEC_KEYS)}


specs = load_specs(str(common.db_file()))


# -- the learned model: saved by `servecast demo` / `train`, or trained here ------------------
@st.cache_resource(show_spinner="loading the kernel-latency model ...", max_entries=4)
def load_model(path: str, mtime: float) -> KernelLatencyPredictor:
    return KernelLatencyPredictor.load(path)


@st.cache_resource(show_spinner="training the kernel-latency model (fast: 2 epochs on a "
                   "20k-kernel sample, about a minute) ...", max_entries=2)
def train_model(path: str, trace: str) -> KernelLatencyPredictor:
    from servecast.predictors.kernel_latency.train import train_kernel_model

    return common.on_store(path, train_kernel_model, epochs=2, max_rows=20_000,
                           vidur=False, neusight_trace=trace)[0]


default_dir = common.out_dir() / "models" / "kernel_latency"
model_dir = Path(st.sidebar.text_input("kernel model dir", str(default_dir), key="kl_model_dir"))
model = None
if (model_dir / "model_card.json").is_file():
    try:
        model = load_model(str(model_dir), (model_dir / "model_card.json").stat().st_mtime)
        st.caption(f"learned model: `{model_dir}`")
    except ServecastError as e:
        st.warning(f"cannot load the model in {model_dir}: {e}")
if model is None:
    st.info(f"No trained kernel-latency model in `{model_dir}` (`servecast demo` writes one). "
            "The roofline estimates below need none; train a fast model here to compare.")
    if common.clicked("Train a fast model", "kl_train", trace):
        model = train_model(str(common.db_file()), trace)


def predict(frame: pl.DataFrame, devices: dict) -> dict[str, np.ndarray]:
    """Latency (ms) per row by method: roofline and, when available, the learned model."""
    out = {"roofline": KernelLatencyPredictor.predict_roofline(frame, devices)}
    if model is not None:
        out["learned"] = model.with_devices(devices).predict(frame)["latency_ms"].to_numpy()
    return out


# -- predicted vs measured --------------------------------------------------------------------
st.subheader("Predicted vs measured")
measured = common.query("SELECT device, list(DISTINCT op ORDER BY op) AS ops FROM "
                        "kernel_latencies WHERE trace = ? GROUP BY device "
                        "ORDER BY count(*) DESC, device", (trace,))
c1, c2 = st.columns(2)
device = c1.selectbox("device", measured["device"].to_list(), key="kl_device")
ops = measured.filter(pl.col("device") == device)["ops"][0].to_list()
op = c2.selectbox("op", ops, index=ops.index("bmm") if "bmm" in ops else 0, key="kl_op")
cols = shape_columns(op)
sample = common.query(  # sample after filtering (a table's USING SAMPLE precedes WHERE)
    f"SELECT * FROM (SELECT op, device, {', '.join(cols)}, latency_ms FROM kernel_latencies "
    f"WHERE trace = ? AND device = ? AND op = ? AND latency_ms > 0) "
    f"USING SAMPLE reservoir({SAMPLE} ROWS) REPEATABLE (0)", (trace, device, op))
pred = predict(sample, specs)
y = sample["latency_ms"].to_numpy()
common.metrics({"kernels": sample.height, "median measured (ms)": float(np.median(y)),
                **{f"MdAPE {k} (%)": mdape(v, y) for k, v in pred.items()}})
common.chart(charts.predicted_vs_measured(y, pred, f"{op} on {device} ({sample.height} kernels)"),
              f"{trace}_{device}_{op}_pred_vs_measured")

# -- unseen device ----------------------------------------------------------------------------
st.subheader("Estimate on an unseen device")
by_flops = sorted(specs, key=lambda d: -specs[d]["SingleFLOPs"])  # newest GPUs first
unseen = [d for d in by_flops if d not in set(measured["device"])] or by_flops
src = st.radio("device spec", ["from the store", "enter numbers"], horizontal=True,
               key="kl_spec_src")
if src == "from the store":
    name = st.selectbox("spec sheet (devices without measurements first)",
                        unseen + [d for d in by_flops if d not in unseen], key="kl_spec_device")
    spec = specs[name]
else:
    name = "custom"
    base = specs[unseen[0]]
    spec = {}
    cols = st.columns(len(SPEC_KEYS) + 1)
    for col, k in zip(cols[:-1], SPEC_KEYS, strict=True):
        spec[k] = col.number_input(k, min_value=0.001, value=float(base[k]), key=f"kl_spec_{k}")
    tensor = cols[-1].number_input(TENSOR_KEY, min_value=0.001, value=base.get(TENSOR_KEY),
                                   placeholder="16 x SingleFLOPs", key=f"kl_spec_{TENSOR_KEY}")
    if tensor is not None:
        spec[TENSOR_KEY] = tensor
    st.caption("Units: Dev_Mem GB, Mem_Bw GB/s, Freq MHz, SingleFLOPs GFLOP/s (fp32), "
               f"L2Cache MB, {TENSOR_KEY} GFLOP/s (dense fp16 tensor-core peak from the data "
               f"sheet; empty = 16 x SingleFLOPs, right for an A100, 4x too fast for an A40 or "
               f"L4); prefilled from {unseen[0]}.")
with st.expander("spec JSON (NeuSight device-config format)"):
    st.code(spec_json({"Device": name, **spec}), language="json")
est_op = st.selectbox("op (`vidur.*`: an LLM layer's operators in fp16, GEMMs at the "
                      f"{TENSOR_KEY} peak)", OP_NAMES, index=OP_NAMES.index("bmm"),
                      key="kl_est_op")
shape = {}
est_cols = shape_columns(est_op)
for col, c in zip(st.columns(len(est_cols)), est_cols, strict=True):
    shape[c] = col.number_input(c, min_value=0 if c == "padding" else 1,
                                value=SHAPE_DEFAULTS[c], step=1, key=f"kl_shape_{c}")
devices = {**specs, name: spec}
names = [name] + [d for d in specs if d != name]
frame = pl.DataFrame({"op": [est_op] * len(names), "device": names,
                      **{c: [float(v)] * len(names) for c, v in shape.items()}})
try:
    est = predict(frame, devices)
except ServecastError as e:
    st.warning(str(e))
    st.stop()
common.metrics({f"{k} on {name} (ms)": float(v[0]) for k, v in est.items()})
long = pl.concat([pl.DataFrame({"device": names, "method": k, "ms": v}) for k, v in est.items()])
shape_txt = "x".join(str(int(v)) for v in shape.values())
common.chart(charts.device_estimates(long, f"{est_op} {shape_txt}: estimate per device"),
              f"{est_op}_estimates")
common.table(long.pivot(on="method", index="device", values="ms"), f"{est_op}_estimates",
             "Estimated latency (ms); the first row is the chosen device")
