"""benchmarks/capacity_mlperf_compare.py: two `capacity_mlperf.py --out` runs row by row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cmp(benchmark_module):
    """benchmarks/capacity_mlperf_compare.py as a module."""
    return benchmark_module("capacity_mlperf_compare")


def _row(system: str, err_tpot: float, split: str = "dev") -> dict:
    return {"reason": "", "split": split, "benchmark": "llama2-70b-99", "gpu": "h100-sxm",
            "scenario": "Server", "submitter": "S", "system": system, "target_qps": 10.0,
            "replicas": 4, "workload": "mlperf-llama2-70b", "mean_tpot_ms": 100.0,
            "err_qps": 0.05, "err_tpot": err_tpot}


def _run(path: Path, rows: list[dict], model: dict | None = None) -> Path:
    path.write_text(json.dumps({"step_model": model, "efficiency": {"trtllm": 0.7},
                                "medians": {"dev": {"mean_tpot": [20.0, 3]},
                                            "held-out": {"mean_tpot": [None, 0]}},
                                "rows": rows}))
    return path


def test_rows_better_and_worse_against_the_base(cmp, data, tmp_path, capsys):
    """Per row |TPOT error| against the first run; signed group medians per run; the
    measured concurrency by Little's law (QPS / replicas x mean output x TPOT); held-out
    rows left out under the default --rows dev."""
    base = _run(tmp_path / "a.json", [_row("x", 0.3), _row("y", -0.2), _row("z", 0.1),
                                      _row("h", 0.9, "held-out")])
    other = _run(tmp_path / "b.json", [_row("x", 0.1), _row("y", -0.1), _row("z", -0.4),
                                       _row("h", 0.0, "held-out")], {"path": "M"})
    assert cmp.main([str(base), str(other)]) == 0
    out = capsys.readouterr().out
    assert "a: step time physics only" in out and "b: step time M" in out
    assert "mean TPOT within 15%: 1 of 3" in out  # a: |0.1|; b: |0.1| and |-0.1|
    assert "mean TPOT within 15%: 2 of 3" in out
    assert "2 rows better, 1 worse; median |error| -10.0 points" in out
    assert "| llama2-70b / h100-sxm / Server | 3 |" in out
    assert "+5.0 / +10.0 | +5.0 / -10.0 |" in out
    mean_out = cmp.lengths("mlperf-llama2-70b", cmp.SAMPLES, seed=0)[1].mean()
    assert f"| {10 / 4 * mean_out * 0.1:.0f} |" in out


def test_runs_of_different_rows_are_refused(cmp, tmp_path):
    base = _run(tmp_path / "a.json", [_row("x", 0.3)])
    other = _run(tmp_path / "b.json", [_row("y", 0.3)])
    with pytest.raises(SystemExit, match="different Server rows"):
        cmp.main([str(base), str(other)])
