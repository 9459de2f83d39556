"""`RoutingRecorder`: forward hooks on MoE router modules that record logits, top-k choices and
expert loads.

Router modules are found by name: every sub-module whose name ends in `gate` (`router` too)
and whose output's last dimension is the expert count. This matches servecast's small MoE,
Hugging Face Mixtral/OLMoE `block_sparse_moe.gate` / `mlp.gate` (an `nn.Linear` returning
logits in transformers < 5; a TopKRouter returning (logits, scores, indices) in >= 5) and
Switch-style `router` modules.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl

from servecast.errors import InvalidInputError

ROUTER_NAMES = ("gate", "router")


def _num_experts(module) -> int | None:
    for attr in ("num_experts", "out_features"):
        n = getattr(module, attr, None)
        if isinstance(n, int):
            return n
    w = getattr(module, "weight", None)
    return int(w.shape[0]) if w is not None and w.ndim == 2 else None


def _top_k(name: str, module, parents: dict) -> int | None:
    for obj in (module, parents.get(name.rpartition(".")[0])):
        for attr in ("top_k", "num_experts_per_tok", "k"):
            k = getattr(obj, attr, None)
            if isinstance(k, int):
                return k
    return None


class RoutingRecorder:
    """Record router outputs of `model` while it runs (use as a context manager or call
    `remove()`). top_k: experts per token when the module does not say (default 1).

    After forward passes: `logits(layer)` (tokens, E), `choices(layer)` (tokens, k),
    `loads()` frame [layer, expert, tokens]; `layers` lists the recorded router names.
    """

    def __init__(self, model, top_k: int | None = None, names: tuple[str, ...] = ROUTER_NAMES):
        self.model, self.default_k = model, top_k
        self._logits: dict[str, list] = defaultdict(list)
        self._choices: dict[str, list] = defaultdict(list)
        self._handles = []
        self.layers: list[str] = []
        self.num_experts: dict[str, int] = {}
        modules = dict(model.named_modules())
        for name, module in modules.items():
            if name.rsplit(".", 1)[-1] not in names:
                continue
            n = _num_experts(module)
            if not n or n < 2:
                continue
            k = top_k or _top_k(name, module, modules) or 1
            self.layers.append(name)
            self.num_experts[name] = n
            self._handles.append(module.register_forward_hook(self._hook(name, n, k)))
        if not self.layers:
            raise InvalidInputError(
                f"{type(model).__name__}: no router module found (looked for sub-modules named "
                f"{' or '.join(names)} with one output per expert); pass names=(...)")

    def _hook(self, name: str, n: int, k: int):
        import torch

        def hook(module, args, output):
            if isinstance(output, (tuple, list)):
                logits = output[0]
                idx = next((o for o in output[1:] if torch.is_tensor(o)
                            and not o.is_floating_point()), None)
            else:
                logits, idx = output, None
            logits = logits.detach().reshape(-1, n).float()
            if idx is None:
                idx = logits.topk(k, dim=-1).indices
            self._logits[name].append(logits.cpu().numpy())
            self._choices[name].append(idx.detach().reshape(logits.shape[0], -1).cpu().numpy())

        return hook

    # -- results ---------------------------------------------------------------------------
    def logits(self, layer: str | int) -> np.ndarray:
        """Router logits (tokens, E) of `layer` (name or index in `layers`)."""
        name = self._name(layer)
        return np.concatenate(self._logits[name]) if self._logits[name] else np.zeros((0, 0))

    def choices(self, layer: str | int) -> np.ndarray:
        """Chosen experts (tokens, k) of `layer`."""
        name = self._name(layer)
        return np.concatenate(self._choices[name]) if self._choices[name] else np.zeros((0, 0))

    def loads(self) -> pl.DataFrame:
        """Assignments per expert: frame [layer (router name), expert, tokens]."""
        rows = []
        for name in self.layers:
            c = self.choices(name)
            counts = np.bincount(c.ravel(), minlength=self.num_experts[name]) if c.size else \
                np.zeros(self.num_experts[name], dtype=int)
            rows.append(pl.DataFrame({"layer": name, "expert": np.arange(len(counts)),
                                      "tokens": counts.astype(np.int64)}))
        return pl.concat(rows)

    def write_loads(self, path, model: str, domain: str = "", assignment: str = "topk"):
        """Write `loads()` as the CSV `servecast ingest olmoe-routing FILE` stores in
        `moe_expert_loads` (model, assignment, domain, layer, expert, tokens; layer = the
        router's index in `layers`, in model order). Returns the path."""
        from pathlib import Path

        if not model:
            raise InvalidInputError("write_loads needs a model name (the `model` column)")
        index = {name: i for i, name in enumerate(self.layers)}
        df = self.loads().select(
            model=pl.lit(model), assignment=pl.lit(assignment), domain=pl.lit(domain),
            layer=pl.col("layer").replace_strict(index, return_dtype=pl.Int32),
            expert=pl.col("expert"), tokens=pl.col("tokens"))
        path = Path(path)
        df.write_csv(path)
        return path

    def _name(self, layer: str | int) -> str:
        if isinstance(layer, int):
            return self.layers[layer]
        if layer not in self.num_experts:
            raise InvalidInputError(f"no router {layer!r}; recorded: {', '.join(self.layers)}")
        return layer

    def clear(self) -> None:
        """Forget what was recorded (hooks stay)."""
        self._logits.clear()
        self._choices.clear()

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> RoutingRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
