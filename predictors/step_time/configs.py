"""Transformer model configs: Hugging Face `config.json` fields -> `ModelConfig`, and the
configs shipped with servecast (`models.json`: the models of the shared serving data).

Field names read (first one present wins): hidden_size | n_embd | d_model; num_hidden_layers |
n_layer | num_layers; num_attention_heads | n_head; num_key_value_heads (default: the heads);
head_dim (default hidden / heads); intermediate_size | n_inner | ffn_dim (default 4 x hidden);
vocab_size; tie_word_embeddings; num_local_experts | num_experts and num_experts_per_tok (MoE).
A gated (SwiGLU) MLP is assumed for the Llama family (llama, mistral, mixtral, qwen2, qwen3).
Numpy-free: the step-time runtime imports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from servecast.errors import DataFileError, InvalidInputError, UnknownNameError

SHIPPED = Path(__file__).with_name("models.json")
GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma"}
_FIELDS = {
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "heads": ("num_attention_heads", "n_head"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of a decoder-only transformer (counts; per model, before tensor parallelism)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    gated_mlp: bool = True
    experts: int = 1
    experts_per_token: int = 1

    def params(self) -> int:
        """Weights (count): attention, MLP (all experts), embeddings (+ lm_head unless tied)."""
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim \
            + self.heads * self.head_dim * self.hidden
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate * self.experts
        router = self.hidden * self.experts if self.experts > 1 else 0
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * (attn + mlp + router) + emb

    def as_dict(self) -> dict:
        return asdict(self)


def from_hf(config: dict, name: str = "model") -> ModelConfig:
    """A ModelConfig from the fields of a Hugging Face config.json (raises InvalidInputError
    naming a missing or bad field)."""
    def pick(key: str) -> int:
        for field in _FIELDS[key]:
            if config.get(field) is not None:
                return _count(config[field], f"{name}: {field}")
        raise InvalidInputError(f"{name}: config lacks {' / '.join(_FIELDS[key])}; expected a "
                                "Hugging Face config.json of a decoder-only transformer")

    hidden, layers, heads = pick("hidden"), pick("layers"), pick("heads")
    if "vocab_size" not in config:
        raise InvalidInputError(f"{name}: config lacks vocab_size")
    kv = _count(config.get("num_key_value_heads") or heads, f"{name}: num_key_value_heads")
    head_dim = _count(config.get("head_dim") or hidden // heads, f"{name}: head_dim")
    inter = next((config[f] for f in ("intermediate_size", "n_inner", "ffn_dim")
                  if config.get(f) is not None), 4 * hidden)
    experts = config.get("num_local_experts") or config.get("num_experts") or 1
    if heads % kv:
        raise InvalidInputError(f"{name}: num_attention_heads={heads} is not a multiple of "
                                f"num_key_value_heads={kv}")
    return ModelConfig(
        name=name, hidden=hidden, layers=layers, heads=heads, kv_heads=kv, head_dim=head_dim,
        intermediate=_count(inter, f"{name}: intermediate_size"),
        vocab=_count(config["vocab_size"], f"{name}: vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        gated_mlp=str(config.get("model_type", "")).lower() in GATED,
        experts=_count(experts, f"{name}: num_local_experts"),
        experts_per_token=_count(config.get("num_experts_per_tok") or 1,
                                 f"{name}: num_experts_per_tok"))


def _count(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 \
            or int(value) != value:
        raise InvalidInputError(f"{where}={value!r} must be a positive integer")
    return int(value)


@cache
def _shipped() -> dict:
    return json.loads(SHIPPED.read_text())["models"]


def shipped() -> list[str]:
    """Names of the configs shipped with servecast."""
    return list(_shipped())


def load_config(model: str | Path | dict) -> ModelConfig:
    """A shipped model name (`llama-3.1-8b`, case and `_` insensitive, an HF repo id works
    too), a path to a config.json, or its parsed dict."""
    if isinstance(model, dict):
        return from_hf(model)
    text = str(model)
    path = Path(text)
    if text.endswith(".json") or path.is_file():
        try:
            return from_hf(json.loads(path.read_text()), path.parent.name or path.stem)
        except FileNotFoundError:
            raise DataFileError(f"{path}: no such model config file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFileError(f"{path}: not a JSON config ({e})") from None
    key = text.lower().replace("_", "-")
    for name, entry in _shipped().items():
        if key in (name, entry["hf_repo"].lower()):
            return from_hf(entry["config"], name)
    raise UnknownNameError(f"unknown model {model!r}; known models: {', '.join(shipped())} "
                           "(or pass the path of a Hugging Face config.json)")
