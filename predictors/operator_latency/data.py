"""Training frames of LLM operators from the store (aiconfigurator's vLLM tables).

One row per (device, op, dtype, shape): `device`, `op`, `dtype` / `kv_dtype` (bf16 | fp8),
M, N, K, B, H, kv_heads, head_dim, tp and `latency_ms`. Kept: GEMMs in bf16 and fp8 (per
tensor); full-context attention (no sliding window) with a bf16 query and a bf16 KV cache,
prefill rows of prefill kernels only; all-reduce at its fastest backend (vLLM serves from
CUDA graphs). Repeated shapes (several kernels of one op) keep their median latency.
`warm_l2` is 1 on every row: aiconfigurator times each kernel again and again on the same
operands, so what fits in the L2 stays there (`runtime.WARM`).
"""

from __future__ import annotations

import polars as pl

from servecast.predictors.operator_latency.runtime import SHAPE

KEY = ["device", "op", "dtype", "kv_dtype", *SHAPE]

_SQL = """
SELECT device, op,
       CASE dtype WHEN 'bfloat16' THEN 'bf16' ELSE dtype END AS dtype,
       CASE kv_dtype WHEN 'bfloat16' THEN 'bf16' ELSE coalesce(kv_dtype, 'bf16') END AS kv_dtype,
       coalesce(M, 0) AS M, coalesce(N, 0) AS N, coalesce(K, 0) AS K, coalesce(B, 1) AS B,
       coalesce(H, 1) AS H, coalesce(kv_heads, 1) AS kv_heads, coalesce(head_dim, 0) AS head_dim,
       coalesce(tp, 1) AS tp, {agg}(latency_ms) AS latency_ms
FROM kernel_latencies
WHERE trace = ? AND source = 'aiconfigurator' AND (
      (op = 'gemm' AND dtype IN ('bfloat16', 'fp8'))
   OR (op IN ('attn_prefill', 'attn_decode') AND dtype = 'bfloat16' AND kv_dtype = 'bfloat16'
       AND coalesce((extra->>'window_size')::BIGINT, 0) = 0
       AND NOT (op = 'attn_prefill' AND extra->>'kernel_source' LIKE '%decode%'))
   OR op = 'allreduce')
  AND op {op_filter}
GROUP BY ALL
"""


def operator_frame(store, trace: str = "aiconfigurator") -> pl.DataFrame:
    """The operator rows of `trace` (see the module docstring), sorted by KEY."""
    parts = [store.sql(_SQL.format(agg="median", op_filter="<> 'allreduce'"), [trace]),
             store.sql(_SQL.format(agg="min", op_filter="= 'allreduce'"), [trace])]
    frame = pl.concat(parts).sort(KEY).with_columns(warm_l2=pl.lit(1.0))
    if frame.is_empty():
        from servecast.errors import InvalidInputError

        raise InvalidInputError(f"trace {trace!r} holds no aiconfigurator operator rows; "
                                "ingest ../shared/datasets/gpu/aiconfigurator first")
    return frame
