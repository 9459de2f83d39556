"""The inner leave-one-GPU-out loops' shared helper (benchmarks/_inner_logo.py): the nested
folds never read the outer GPU, and both loops refuse a bad override with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _inner_logo import nested_folds  # noqa: E402


def test_nested_folds_never_read_the_outer_gpu():
    frame = pl.DataFrame({"device": ["a100", "h100", "l40s", "b200"] * 3, "x": range(12)})
    folds = list(nested_folds(frame, outer_too=True))
    assert len(folds) == 4 * 4  # per outer GPU: itself, then its three training GPUs
    for outer, inner, fit, test in folds:
        assert set(test["device"]) == {inner}
        assert set(fit["device"]) == {"a100", "h100", "l40s", "b200"} - {outer, inner}
        assert fit.height == 3 * (4 - len({outer, inner}))
    assert [(o, i) for o, i, _f, _t in folds[:4]] == [
        ("a100", "a100"), ("a100", "b200"), ("a100", "h100"), ("a100", "l40s")]
    assert len(list(nested_folds(frame))) == 4 * 3


@pytest.mark.parametrize(("script", "args", "says"), [
    ("gemm_inner_logo.py", ["--set", "NOPE=1"], "physics has no float constant 'NOPE'"),
    ("gemm_inner_logo.py", ["--set", "TILE_TRAFFIC=0,x"], "'x' is not a number"),
    ("attention_inner_logo.py", ["--set", "SOFTMAX_OPS=x"], "'x' is not a number"),
    ("attention_inner_logo.py", ["--param", "gemm.num_leaves=7"], "KEY one of"),
    ("attention_inner_logo.py", ["--param", "attn_decode.num_leaves=l2"],
     "'l2' is not a number"),
])
def test_a_bad_override_exits_2_naming_the_flag(script, args, says):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert says in run.stderr and args[0] in run.stderr
    assert "Traceback" not in run.stderr
