"""Kernel-latency frames from the store: NeuSight kernels, Vidur operators (as shapes) and
the HELP NAS-Bench-201 protocol; device spec sheets from the `devices` table."""

from __future__ import annotations

import json

import polars as pl

from servecast.errors import UnknownNameError
from servecast.predictors.kernel_latency.ops import SHAPE_COLUMNS
from servecast.predictors.kernel_latency.specs import SPEC_COLUMNS, SPEC_KEYS

#: public spec sheets (NeuSight keys + the dense fp16 tensor-core peak, GFLOP/s, and the board
#: power, W) of the GPUs
#: Vidur profiled: a100 = A100-SXM4-80GB, h100 = H100-SXM5-80GB, a40 = A40 (vendor data
#: sheets; Vidur's operators run in fp16)
VIDUR_SPECS: dict[str, dict] = {
    "a100": {"Dev_Mem": 80, "Mem_Bw": 2039, "Num_Sm": 108, "Core_Per_SM": 64, "Freq": 1410,
             "SingleFLOPs": 19492, "L2Cache": 40, "TensorFLOPs": 312000, "TDP": 400},
    "h100": {"Dev_Mem": 80, "Mem_Bw": 3350, "Num_Sm": 132, "Core_Per_SM": 128, "Freq": 1980,
             "SingleFLOPs": 66908, "L2Cache": 50, "TensorFLOPs": 989400, "TDP": 700},
    "a40": {"Dev_Mem": 48, "Mem_Bw": 696, "Num_Sm": 84, "Core_Per_SM": 128, "Freq": 1740,
            "SingleFLOPs": 37420, "L2Cache": 6, "TensorFLOPs": 149700, "TDP": 300},
}


def _need_trace(store, trace: str, adapter: str, rel: str) -> None:
    n = store.sql("SELECT count(*) AS n FROM traces WHERE trace = ?", [trace]).item()
    if not n:
        raise UnknownNameError(
            f"no trace {trace!r} in {store.path}; ingest it first: "
            f"`servecast ingest {adapter} ../shared/datasets/{rel} --trace {trace}`")


def device_specs(store) -> dict[str, dict]:
    """Device name -> spec dict (SPEC_KEYS, plus TensorFLOPs / TDP where the device-config
    JSON had them) from the store's `devices` table; only devices with every SPEC_KEY (spec sheets
    without them, such as aiconfigurator's system YAMLs, serve other models)."""
    complete = " AND ".join(f"{k} IS NOT NULL" for k in SPEC_KEYS)
    optional = ", ".join(f"TRY_CAST(spec->>'{k}' AS DOUBLE) AS {k}"
                         for k in SPEC_COLUMNS[len(SPEC_KEYS):])
    df = store.sql(f"SELECT device, {', '.join(SPEC_KEYS)}, {optional} FROM devices "
                   f"WHERE {complete}")
    return {r["device"]: {k: r[k] for k in SPEC_COLUMNS if r[k] is not None}
            for r in df.iter_rows(named=True)}


def neusight_frame(store, trace: str = "neusight") -> pl.DataFrame:
    """NeuSight kernels: op, device, shape columns, latency_ms (launch config left out)."""
    _need_trace(store, trace, "neusight", "gpu/neusight")
    return store.sql(
        f"SELECT op, device, {', '.join(SHAPE_COLUMNS)}, latency_ms FROM kernel_latencies "
        "WHERE trace = ? ORDER BY device, op", [trace])


def vidur_frame(store, trace: str = "vidur_mlp") -> pl.DataFrame:
    """Vidur operators as `vidur.<op>` rows with GEMM (M,N,K) or row (B,H) shapes computed
    from the model config (head_dim = n_embd / n_head; gated MLPs double the up-projection),
    plus model, num_tokens, tp, latency_ms (median). Devices are a100 / a40 / h100."""
    _need_trace(store, trace, "vidur-mlp", "gpu/vidur_profiling")
    return store.sql(
        """WITH r AS (
             SELECT op, device, model, num_tokens AS T, tp, latency_ms,
                    (extra->>'n_embd')::DOUBLE AS E, (extra->>'n_head')::DOUBLE AS nh,
                    (extra->>'n_kv_head')::DOUBLE AS nkv,
                    (extra->>'n_expanded_embd')::DOUBLE AS F,
                    (extra->>'use_gated_mlp')::BOOLEAN AS gated
             FROM kernel_latencies WHERE trace = ? AND latency_ms > 0)
           SELECT 'vidur.' || op AS op, device, model, T AS num_tokens, tp,
             CASE WHEN op LIKE '%proj' THEN NULL ELSE T END::DOUBLE AS B,
             CASE WHEN op LIKE '%proj' THEN T END::DOUBLE AS M,
             CASE op WHEN 'attn_pre_proj' THEN (nh + 2 * nkv) * E / nh / tp
                     WHEN 'attn_post_proj' THEN E
                     WHEN 'mlp_up_proj' THEN F * (1 + gated::INT) / tp
                     WHEN 'mlp_down_proj' THEN E END AS N,
             CASE op WHEN 'attn_pre_proj' THEN E WHEN 'attn_post_proj' THEN E / tp
                     WHEN 'mlp_up_proj' THEN E WHEN 'mlp_down_proj' THEN F / tp END AS K,
             CASE WHEN op LIKE '%proj' THEN NULL
                  WHEN op = 'mlp_act' THEN F / tp
                  WHEN op = 'attn_rope' THEN (nh + nkv) * E / nh / tp
                  ELSE E END::DOUBLE AS H,
             latency_ms
           FROM r ORDER BY device, model, op, T, tp""", [trace])


def help_frames(store, trace: str = "help_nasbench201") -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(latencies[device, arch_index, latency_ms], architectures[arch_index, arch],
    splits {name: [items]}) of HELP's NAS-Bench-201 data."""
    _need_trace(store, trace, "help-nasbench201", "gpu/help_nasbench201")
    lat = store.sql("SELECT device, arch_index, latency_ms FROM kernel_latencies WHERE trace = ? "
                    "ORDER BY device, arch_index", [trace])
    archs = store.sql("SELECT arch_index, arch FROM architectures WHERE trace = ? "
                      "ORDER BY arch_index", [trace])
    sp = store.sql("SELECT split, item FROM benchmark_splits WHERE trace = ?", [trace])
    splits: dict[str, list] = {}
    for r in sp.iter_rows(named=True):
        splits.setdefault(r["split"], []).append(r["item"])
    if "hardware_embedding_arch_indices" in splits:
        splits["hardware_embedding_arch_indices"] = [
            int(x) for x in splits["hardware_embedding_arch_indices"]]
    return lat, archs, splits


def spec_json(spec: dict) -> str:
    """A spec dict as the JSON NeuSight's device configs use."""
    return json.dumps({k: spec[k] for k in ["Device", *SPEC_COLUMNS] if k in spec}, indent=2)
