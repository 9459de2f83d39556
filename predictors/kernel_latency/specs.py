"""Device spec sheets with the keys of NeuSight's device-config JSONs.

Units: Dev_Mem GB, Mem_Bw GB/s, Freq MHz, SingleFLOPs GFLOP/s (fp32), L2Cache MB.
Optional: TensorFLOPs GFLOP/s, the dense fp16 tensor-core peak from the vendor's data sheet
(NeuSight's JSONs lack it; default TENSOR_CORE_FACTOR x SingleFLOPs, right for A100 / H100
but 4x too high for A40 / L4-class cards). Only fp16 GEMMs use it.
Optional: TDP W, the board power from the vendor's data sheet; it caps the sustained fp32 peak
(`physics.sustained_fp32`). When a spec lacks it, `check_spec` takes the data-sheet value of
the spec's `Device` from the GPU catalog (`servecast gpus`) or `DATASHEET_TDP`; a device
known to neither gets the documented default: no power limit (the sustained peak is
SingleFLOPs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from servecast.errors import DataFileError, InvalidInputError, UnknownNameError

SPEC_KEYS = ["Dev_Mem", "Mem_Bw", "Num_Sm", "Core_Per_SM", "Freq", "SingleFLOPs", "L2Cache"]
#: optional key (see the module docstring) and its default as a multiple of SingleFLOPs
TENSOR_KEY = "TensorFLOPs"
TENSOR_CORE_FACTOR = 16.0
#: optional board-power key (W, see the module docstring)
POWER_KEY = "TDP"
#: columns of a checked spec row: the required keys, the tensor-core peak, the board power
#: (inf where unknown: no power limit)
SPEC_COLUMNS = [*SPEC_KEYS, TENSOR_KEY, POWER_KEY]
#: data-sheet board power (W, source) of NeuSight's GPUs that the GPU catalog lacks
DATASHEET_TDP = {
    "Tesla P4": (75.0, "NVIDIA Tesla P4 data sheet (50 W / 75 W configurable; 75 W max)"),
    "Tesla T4": (70.0, "NVIDIA T4 data sheet"),
    "Tesla P100-PCIE-16GB": (250.0, "NVIDIA Tesla P100 PCIe data sheet"),
    "Tesla V100-PCIE-32GB": (250.0, "NVIDIA V100 PCIe data sheet"),
}


def datasheet_tdp(name) -> float | None:
    """Board power (W) of device `name` from the GPU catalog or `DATASHEET_TDP`; None when
    neither knows it."""
    if not name:
        return None
    if str(name) in DATASHEET_TDP:
        return DATASHEET_TDP[str(name)][0]
    from servecast.gpus import catalog, catalog_name

    key = catalog_name(str(name))
    tdp = catalog()[key]["values"].get(POWER_KEY) if key else None
    return float(tdp[0]) if tdp else None


def check_spec(spec: Mapping, name: str = "device spec") -> dict[str, float]:
    """The spec's SPEC_COLUMNS as floats (TensorFLOPs defaulted when absent, TDP from the
    data sheet of its `Device` or inf: see the module docstring); raises InvalidInputError
    naming what is missing or bad."""
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"{name}: expected a mapping of {', '.join(SPEC_KEYS)}")
    missing = [k for k in SPEC_KEYS if k not in spec or spec[k] is None]
    if missing:
        raise InvalidInputError(
            f"{name}: missing key(s) {', '.join(missing)}; a device spec needs "
            f"{', '.join(SPEC_KEYS)} (see the NeuSight device_configs/*.json files)")
    out = {}
    given = [k for k in SPEC_COLUMNS if k in SPEC_KEYS or spec.get(k) is not None]
    for k in given:
        try:
            v = float(spec[k])
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name}: {k}={spec[k]!r} is not a number") from None
        if not np.isfinite(v) or v <= 0:
            raise InvalidInputError(f"{name}: {k}={spec[k]!r} must be a positive number")
        out[k] = v
    out.setdefault(TENSOR_KEY, TENSOR_CORE_FACTOR * out["SingleFLOPs"])
    if POWER_KEY not in out:
        out[POWER_KEY] = datasheet_tdp(spec.get("Device")) or float("inf")
    return out


def load_spec(path: str | Path) -> dict:
    """Read one device-config JSON (keys SPEC_KEYS, plus `Device`); raises DataFileError."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such device spec file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: not valid JSON ({e}); expected a NeuSight device "
                            "config like {\"Device\": ..., \"Mem_Bw\": 1555, ...}") from None
    check_spec(spec, str(path))
    return spec


def load_spec_dir(folder: str | Path) -> dict[str, dict]:
    """All `*.json` device configs in `folder`, keyed by their `Device` field."""
    out = {}
    for f in sorted(Path(folder).glob("*.json")):
        spec = load_spec(f)
        out[str(spec.get("Device", f.stem.replace("_", " ")))] = spec
    return out


def spec_matrix(devices: Mapping[str, Mapping], names) -> np.ndarray:
    """Rows of SPEC_COLUMNS (float) for each device name in `names`; raises
    UnknownNameError."""
    checked = {}
    uniq, inv = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    for n in map(str, uniq):
        if n not in devices:
            raise UnknownNameError(
                f"device {n!r} has no spec in `devices` (have: {', '.join(sorted(devices))}); "
                "pass its device-config JSON")
        checked[n] = check_spec({"Device": n, **devices[n]}, f"device {n!r}")
    table = np.array([[checked[str(n)][k] for k in SPEC_COLUMNS] for n in uniq])
    return table[inv.reshape(-1)]
