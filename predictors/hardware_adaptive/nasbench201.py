"""NAS-Bench-201 cells: parse `|op~0|+|op~0|op~1|+|...|` strings, one-hot encodings and the
FLOPs / params proxies of the CIFAR-10 network (stem, 3 stages x 5 cells, C = 16/32/64)."""

from __future__ import annotations

import numpy as np

from servecast.errors import InvalidInputError

CELL_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
EDGES = 6
#: (channels, feature-map side) of the three stages on 32x32 CIFAR-10 inputs
STAGES = ((16, 32), (32, 16), (64, 8))
CELLS_PER_STAGE = 5


def parse_cell(arch: str) -> list[str]:
    """The 6 edge ops of a cell string, in NAS-Bench-201 order; raises InvalidInputError."""
    ops = [tok.split("~")[0] for node in arch.strip("|").split("|+|")
           for tok in node.strip("|").split("|") if tok]
    if len(ops) != EDGES or any(o not in CELL_OPS for o in ops):
        raise InvalidInputError(
            f"not a NAS-Bench-201 cell string: {arch!r} (expected 6 edges of {CELL_OPS})")
    return ops


def encode(archs: list[str]) -> np.ndarray:
    """One-hot [n, 6 * 5] float32 encoding of cell strings."""
    out = np.zeros((len(archs), EDGES * len(CELL_OPS)), np.float32)
    for i, a in enumerate(archs):
        for e, op in enumerate(parse_cell(a)):
            out[i, e * len(CELL_OPS) + CELL_OPS.index(op)] = 1
    return out


def flops_params(archs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(MFLOPs as multiply-adds, M params) of the cells' ops, summed over the 15 cells; the
    fixed stem, reduction blocks and classifier are the same for every arch and left out."""
    enc = encode(archs).reshape(len(archs), EDGES, len(CELL_OPS)).sum(1)
    n1, n3, pool = enc[:, 2], enc[:, 3], enc[:, 4]
    flops = np.zeros(len(archs))
    params = np.zeros(len(archs))
    for c, side in STAGES:
        hw = side * side
        flops += CELLS_PER_STAGE * ((9 * n3 + n1) * c * c * hw + pool * 9 * c * hw)
        params += CELLS_PER_STAGE * (9 * n3 + n1) * c * c
    return flops / 1e6, params / 1e6
