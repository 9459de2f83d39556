"""LightGBM tree ensembles compiled to bit masks, evaluated with numpy alone (runtime path).

Models whose features are not all table dimensions (the prompt-length history codes change
with every request) cannot be served from a LengthTable; the runtime evaluates their trees
instead, QuickScorer-style: each tree's leaves are numbered left to right and a node
`x[f] <= thr` that is false removes the leaves of its left subtree. For a feature f with
sorted distinct thresholds thr_f, `masks_f[k, t]` is the AND of those removals over the
nodes of tree t on f whose threshold is below the row's value (k = bisect_left(thr_f, x)).
A row's exit leaf in every tree is the lowest bit left set in the AND over the features:
one row of `masks_f` per feature, a few vectorized numpy ops over all trees at once.
Exactly LightGBM's `predict` for numerical splits on values without NaN (the codes never are),
then expm1 for heads fitted on log1p(tokens).
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

import numpy as np

FILE = "forest.npz"


class Forest:
    """Heads of boosted trees: `predict_row(x) -> (heads,)`, `predict(X) -> (n, heads)`."""

    def __init__(self, features: np.ndarray, thresholds: list[np.ndarray],
                 masks: list[np.ndarray], leaves: np.ndarray, starts: np.ndarray,
                 expm1: np.ndarray | None = None):
        self.features = np.asarray(features, dtype=np.intp)  # columns with splits
        self.thresholds = [np.asarray(t, dtype=np.float64) for t in thresholds]
        self.thr_lists = [t.tolist() for t in self.thresholds]
        self.masks = list(masks)  # per feature (K_f + 1, T) uint64
        self.leaves = np.asarray(leaves, dtype=np.float64)  # (T, max leaves)
        self.starts = np.asarray(starts, dtype=np.intp)  # first tree of each head
        # heads fitted on log1p(tokens): their sums go through expm1
        self.expm1 = (np.zeros(len(self.starts), bool) if expm1 is None
                      else np.asarray(expm1, dtype=bool))
        self._log = bool(self.expm1.any())
        T, L = self.leaves.shape
        self._flat = self.leaves.reshape(-1)
        self._base = np.arange(T, dtype=np.intp) * L
        self._all = np.full(T, np.uint64(2**64 - 1), dtype=np.uint64)
        self._pairs = list(zip(self.features.tolist(), self.thr_lists, self.masks, strict=True))

    # -- building --------------------------------------------------------------------------
    @classmethod
    def from_boosters(cls, boosters: list, n_features: int,
                      expm1: list[bool] | None = None) -> Forest:
        """Compile LightGBM boosters (one per head, same feature columns); `expm1[h]`: head
        h was fitted on log1p(target)."""
        trees: list[list[tuple[int, float, int]]] = []  # per tree: (feature, thr, left mask)
        leaf_values: list[list[float]] = []
        starts = []
        for b in boosters:
            starts.append(len(trees))
            for info in b.dump_model()["tree_info"]:
                nodes, values = [], []
                _walk(info["tree_structure"], nodes, values)
                if len(values) > 64:
                    raise ValueError("trees with more than 64 leaves are not supported")
                trees.append(nodes)
                leaf_values.append(values)
        T = len(trees)
        L = max(len(v) for v in leaf_values)
        leaves = np.zeros((T, L))
        for t, v in enumerate(leaf_values):
            leaves[t, :len(v)] = v
        used = sorted({f for nodes in trees for f, _, _ in nodes})
        thresholds, masks = [], []
        full = np.uint64(2**64 - 1)
        for f in used:
            thr = np.unique([th for nodes in trees for g, th, _ in nodes if g == f])
            m = np.full((len(thr) + 1, T), full, dtype=np.uint64)
            for t, nodes in enumerate(trees):
                for g, th, left in nodes:
                    if g == f:  # x > th (threshold index < k) leaves the left subtree out
                        j = int(np.searchsorted(thr, th)) + 1
                        m[j, t] &= ~np.uint64(left)
            thresholds.append(thr)
            masks.append(np.bitwise_and.accumulate(m, axis=0))
        if used and used[-1] >= n_features:
            raise ValueError("split on a feature outside the columns")
        return cls(np.array(used, dtype=np.intp), thresholds, masks, leaves,
                   np.array(starts, dtype=np.intp), expm1)

    # -- evaluation ------------------------------------------------------------------------
    def predict_row(self, x) -> np.ndarray:
        """Raw head outputs (heads,) for one row `x` (sequence indexed by column)."""
        acc = self._all.copy()
        for f, thr, m in self._pairs:
            acc &= m[bisect_left(thr, x[f])]
        low = acc & (~acc + np.uint64(1))  # lowest set bit = exit leaf
        leaf = np.frexp(low.astype(np.float64))[1] - 1
        out = np.add.reduceat(self._flat[self._base + leaf], self.starts)
        if self._log:
            out[self.expm1] = np.expm1(out[self.expm1])
        return out

    def predict(self, X: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Raw head outputs (n, heads) of the rows of `X` (n, columns); rows with the same
        threshold intervals on every used feature are evaluated once."""
        X = np.asarray(X, dtype=np.float64)
        n = len(X)
        if n == 0:
            return np.zeros((0, len(self.starts)))
        idx = np.column_stack([np.searchsorted(thr, X[:, f], side="left")
                               for f, thr in zip(self.features, self.thresholds, strict=True)]
                              ) if len(self.features) else np.zeros((n, 0), np.intp)
        uniq, inv = np.unique(idx, axis=0, return_inverse=True)
        out = np.empty((len(uniq), len(self.starts)))
        for s in range(0, len(uniq), chunk):
            u = uniq[s:s + chunk]
            acc = np.broadcast_to(self._all, (len(u), len(self._all))).copy()
            for j, m in enumerate(self.masks):
                acc &= m[u[:, j]]
            low = acc & (~acc + np.uint64(1))
            leaf = np.frexp(low.astype(np.float64))[1] - 1
            vals = self._flat[self._base[None, :] + leaf]
            out[s:s + chunk] = np.add.reduceat(vals, self.starts, axis=1)
        if self._log:
            out[:, self.expm1] = np.expm1(out[:, self.expm1])
        return out[inv.ravel()]

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        arrays = {"features": self.features, "leaves": self.leaves, "starts": self.starts,
                  "expm1": self.expm1}
        for j in range(len(self.features)):
            arrays[f"thr{j}"] = self.thresholds[j]
            arrays[f"mask{j}"] = self.masks[j]
        np.savez_compressed(Path(path) / FILE, **arrays)

    @classmethod
    def load(cls, path: Path) -> Forest:
        with np.load(Path(path) / FILE) as z:
            k = len(z["features"])
            return cls(z["features"], [z[f"thr{j}"] for j in range(k)],
                       [z[f"mask{j}"] for j in range(k)], z["leaves"], z["starts"],
                       z["expm1"])


def _walk(node: dict, nodes: list, values: list) -> int:
    """Append the splits of a dumped LightGBM tree (leaves numbered left to right); returns
    the bit mask of the leaves under `node`."""
    if "leaf_value" in node:
        values.append(float(node["leaf_value"]))
        return 1 << (len(values) - 1)
    if node.get("decision_type") != "<=":
        raise ValueError(f"unsupported split {node.get('decision_type')!r} (numerical only)")
    pos = len(nodes)
    nodes.append(None)
    left = _walk(node["left_child"], nodes, values)
    right = _walk(node["right_child"], nodes, values)
    nodes[pos] = (int(node["split_feature"]), float(node["threshold"]), left)
    return left | right
