"""The operators the kernel-latency model knows, their families and required shape columns.

Shapes follow the NeuSight files: `B,M,N,K` for bmm/linear (C[B,M,N] = A[B,M,K] @ W[B,K,N]);
`B,H` for layernorm, softmax and element-wise ops (B rows of H elements); the conv columns for
conv2d (square `input_size`, square `kernel_size`). Vidur's LLM operators are named
`vidur.<op>` and carry GEMM (`M,N,K`, fp16) or row (`B,H`) shapes derived from the model config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from servecast.errors import InvalidInputError, UnknownNameError

GEMM = ["B", "M", "N", "K"]
ROWS = ["B", "H"]
CONV = ["B", "in_channels", "out_channels", "kernel_size", "input_size", "stride", "padding"]
#: every shape column any op uses
SHAPE_COLUMNS = ["B", "M", "N", "K", "H", *CONV[1:]]

#: op -> (family, shape columns, bytes-moved factor in elements per output element, flops/elem)
#: families: gemm, conv, norm, binary (two tensor inputs), unary (one tensor input), gather
OPS: dict[str, tuple[str, list[str], float, float]] = {
    "bmm": ("gemm", GEMM, 0, 0),
    "linear": ("gemm", GEMM, 0, 0),
    "conv": ("conv", CONV, 0, 0),
    "ln": ("norm", ROWS, 2, 8),
    "softmax": ("norm", ROWS, 2, 5),
    "add": ("binary", ROWS, 3, 1),
    "mul": ("binary", ROWS, 3, 1),
    "div": ("binary", ROWS, 3, 1),
    "pow": ("binary", ROWS, 3, 8),
    "addu": ("unary", ROWS, 2, 1),
    "mulu": ("unary", ROWS, 2, 1),
    "divu": ("unary", ROWS, 2, 1),
    "powu": ("unary", ROWS, 2, 8),
    "relu": ("unary", ROWS, 2, 1),
    "gelu": ("unary", ROWS, 2, 12),
    "tanh": ("unary", ROWS, 2, 10),
    # Vidur per-operator profiles (fp16 on tensor cores; shapes from the model config)
    "vidur.attn_pre_proj": ("gemm16", ["M", "N", "K"], 0, 0),
    "vidur.attn_post_proj": ("gemm16", ["M", "N", "K"], 0, 0),
    "vidur.mlp_up_proj": ("gemm16", ["M", "N", "K"], 0, 0),
    "vidur.mlp_down_proj": ("gemm16", ["M", "N", "K"], 0, 0),
    "vidur.mlp_act": ("unary16", ROWS, 3, 12),
    "vidur.input_layernorm": ("norm16", ROWS, 2, 8),
    "vidur.post_attention_layernorm": ("norm16", ROWS, 2, 8),
    "vidur.add": ("binary16", ROWS, 3, 1),
    "vidur.attn_rope": ("unary16", ROWS, 2, 6),
    "vidur.emb": ("gather16", ROWS, 1, 0),
}
ALIASES = {"layernorm": "ln", "layer_norm": "ln", "matmul": "bmm", "gemm": "bmm",
           "conv2d": "conv", "sub": "add", "subu": "addu"}
FAMILIES = sorted({f for f, *_ in OPS.values()})
OP_NAMES = sorted(OPS)


def canonical_op(op: str) -> str:
    """The canonical name of `op` (aliases resolved); raises UnknownNameError."""
    name = ALIASES.get(str(op).strip().lower(), str(op).strip().lower())
    if name not in OPS:
        raise UnknownNameError(
            f"unknown op {op!r}; known ops: {', '.join(OP_NAMES)} "
            f"(aliases: {', '.join(sorted(ALIASES))})")
    return name


def shape_columns(op: str) -> list[str]:
    """Shape columns `op` needs, in the order `--shape` takes them."""
    return OPS[canonical_op(op)][1]


def shape_dict(op: str, shape: Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    """`shape` (a sequence in `shape_columns(op)` order, or a mapping) as a checked dict.

    bmm/linear/conv accept a missing leading batch (`M,N,K` means B=1).
    """
    cols = shape_columns(op)
    batch_optional = cols[0] == "B" and len(cols) > 2
    if isinstance(shape, Mapping):
        missing = [c for c in cols if c not in shape and not (c == "B" and batch_optional)]
        if missing:
            raise InvalidInputError(
                f"op {op!r}: shape lacks {', '.join(missing)}; give {', '.join(cols)}")
        out = {c: shape.get(c, 1) for c in cols}
    else:
        vals = list(shape)
        if len(vals) == len(cols) - 1 and batch_optional:
            vals = [1, *vals]
        if len(vals) != len(cols):
            raise InvalidInputError(
                f"op {op!r}: shape has {len(vals)} values, expected {len(cols)} "
                f"({','.join(cols)}), e.g. --shape {','.join(['8'] * len(cols))}")
        out = dict(zip(cols, vals, strict=True))
    check_dims(op, out)
    return {k: float(v) for k, v in out.items()}


def check_dims(op: str, shape: Mapping[str, object], where: str = "") -> None:
    """Raise InvalidInputError unless every needed dim of `op` is a finite number > 0
    (`padding` may be 0)."""
    for c in shape_columns(op):
        v = shape[c]
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{where}op {op!r}: {c}={v!r} is not a number") from None
        low_ok = x >= 0 if c == "padding" else x > 0
        if not np.isfinite(x) or not low_ok:
            raise InvalidInputError(
                f"{where}op {op!r}: {c}={v!r} must be {'>= 0' if c == 'padding' else '> 0'}")
