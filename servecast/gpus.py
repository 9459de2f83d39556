"""The built-in GPU catalog (`gpus.json`, datasheet values with their source per value) and
spec resolution: a catalog name, a NeuSight device-config JSON or an aiconfigurator system
YAML -> one spec dict.

A resolved spec has the NeuSight keys (Dev_Mem GB, Mem_Bw GB/s, Num_Sm, Core_Per_SM, Freq MHz,
SingleFLOPs GFLOP/s fp32, L2Cache MB) plus, where known, TensorFLOPs (dense bf16/fp16
tensor-core GFLOP/s), FP8FLOPs (dense GFLOP/s), Interconnect_Bw and PCIe_Bw (GB/s per GPU,
both directions summed) and TDP (W), and `Device` (its name). Keys a source lacks are absent,
never guessed; `require` names what a computation needs. Nothing here imports more than
the standard library, yaml (only for a YAML file) and the errors module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from servecast.errors import DataFileError, InvalidInputError, UnknownNameError

CATALOG_FILE = Path(__file__).with_name("gpus.json")
NEUSIGHT_KEYS = ["Dev_Mem", "Mem_Bw", "Num_Sm", "Core_Per_SM", "Freq", "SingleFLOPs", "L2Cache"]
EXTRA_KEYS = ["TensorFLOPs", "FP8FLOPs", "Interconnect_Bw", "PCIe_Bw", "TDP"]
SPEC_KEYS = NEUSIGHT_KEYS + EXTRA_KEYS
#: spec key holding the dense tensor-core peak of each GEMM dtype
DTYPE_FLOPS = {"bf16": "TensorFLOPs", "fp16": "TensorFLOPs", "fp8": "FP8FLOPs"}


def normalize(name: str) -> str:
    """Lower case, `_` and blanks as `-`: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return "-".join(str(name).lower().replace("_", " ").split())


@cache
def _catalog() -> dict:
    return json.loads(CATALOG_FILE.read_text())


def catalog() -> dict[str, dict]:
    """Catalog name -> entry (name, vendor, aliases, values {key: [value, source id]}, note)."""
    return _catalog()["gpus"]


def sources() -> dict[str, str]:
    """Source id -> the document (title and URL) a catalog value comes from."""
    return _catalog()["sources"]


@cache
def _aliases() -> dict[str, str]:
    out = {}
    for key, entry in catalog().items():
        for a in [key, *entry["aliases"]]:
            out[normalize(a)] = key
    return out


def catalog_name(name: str) -> str | None:
    """The catalog key `name` (a key, an alias, a NeuSight or aiconfigurator device name)
    refers to, or None."""
    return _aliases().get(normalize(name))


def catalog_spec(name: str) -> dict:
    """The spec dict of catalog GPU `name` (raises UnknownNameError listing the known ones)."""
    key = catalog_name(name)
    if key is None:
        raise UnknownNameError(
            f"unknown GPU {name!r}; known GPUs: {', '.join(catalog())} "
            "(or pass a NeuSight device JSON / aiconfigurator system YAML file)")
    spec = {k: v for k, (v, _src) in catalog()[key]["values"].items()}
    return {"Device": key, **spec}


def spec_from_yaml(path: str | Path, fill: bool = True) -> dict:
    """An aiconfigurator `systems/<gpu>.yaml` as a spec dict (bytes and FLOP/s converted to
    GB, GB/s and GFLOP/s). The YAML has no SM count, clock, fp32 peak or L2 size: those come
    from the catalog when `fill` and the file names a catalog GPU (its stem or `data_dir`),
    else stay absent."""
    path = Path(path)
    doc = read_yaml(path)
    gpu = doc.get("gpu")
    if not isinstance(gpu, dict) or "mem_bw" not in gpu:
        raise DataFileError(f"{path}: not an aiconfigurator system YAML: expected a `gpu:` "
                            "section with mem_bw, mem_capacity, bfloat16_tc_flops, ...")
    node = doc.get("node") or {}
    name = Path(str(doc.get("data_dir") or path.stem)).name
    spec: dict = {}
    if fill and (catalog_name(name) or catalog_name(path.stem)):
        spec.update(catalog_spec(catalog_name(name) or path.stem))
    spec["Device"] = name
    conv = {"Mem_Bw": (gpu.get("mem_bw"), 1e9), "Dev_Mem": (gpu.get("mem_capacity"), 2**30),
            "TensorFLOPs": (gpu.get("bfloat16_tc_flops"), 1e9),
            "FP8FLOPs": (gpu.get("fp8_tc_flops"), 1e9), "TDP": (gpu.get("power"), 1),
            "Interconnect_Bw": (node.get("intra_node_bw"), 0.5e9),
            "PCIe_Bw": (node.get("pcie_bw"), 0.5e9)}
    for key, (value, unit) in conv.items():
        if value is not None:
            spec[key] = _number(value, f"{path}: {key}") / unit
    return spec


def read_yaml(path: Path) -> dict:
    """A YAML file holding a mapping (raises DataFileError naming the file)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise DataFileError(f"{path}: expected a YAML mapping")
    return doc


def _number(value, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}={value!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise InvalidInputError(f"{where}={value!r} must be a positive number")
    return v


def resolve_spec(gpu: str | Path | Mapping) -> dict:
    """One spec dict from a catalog name, a spec file (NeuSight `.json`, aiconfigurator
    `.yaml`) or a mapping of spec keys. Values are checked to be positive numbers."""
    if isinstance(gpu, Mapping):
        spec, where = dict(gpu), "device spec"
    else:
        path = Path(str(gpu))
        if path.suffix.lower() in (".yaml", ".yml"):
            spec, where = spec_from_yaml(path), str(path)
        elif path.suffix.lower() == ".json":
            from servecast.predictors.kernel_latency.specs import load_spec

            spec, where = load_spec(path), str(path)
        else:
            spec, where = catalog_spec(str(gpu)), f"GPU {gpu!r}"
    out = {"Device": str(spec.get("Device", where))}
    for key in SPEC_KEYS:
        if spec.get(key) is not None:
            out[key] = _number(spec[key], f"{where}: {key}")
    return out


def require(spec: Mapping, keys: list[str], why: str) -> None:
    """Raise InvalidInputError unless `spec` has every key of `keys` (`why` says what needs
    them)."""
    missing = [k for k in keys if spec.get(k) is None]
    if missing:
        raise InvalidInputError(
            f"{spec.get('Device', 'device spec')}: missing {', '.join(missing)}, needed for "
            f"{why}; add it to the spec file (units in `servecast gpus --help`) or use a "
            f"catalog GPU (`servecast gpus`)")


def dtype_flops_key(dtype: str) -> str:
    """The spec key of the dense tensor peak of GEMM dtype `dtype` (bf16, fp16, fp8)."""
    key = DTYPE_FLOPS.get(str(dtype).lower())
    if key is None:
        raise InvalidInputError(
            f"unknown dtype {dtype!r}; known dtypes: {', '.join(DTYPE_FLOPS)}")
    return key
