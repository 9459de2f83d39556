"""The emulator against a real client (issue 24, item 6): AIPerf 0.13.0's own TTFT and TPOT
beside the simulator's for the same arrivals.

  .venv/bin/python benchmarks/emulator_aiperf.py [--requests 40] [--rate 4] [--replicas 1]
      [--model llama-3.1-8b] [--gpu l40s] [--prompt-tokens 4096] [--output-tokens 64]

`servecast emulate` on a loopback port; AIPerf (the tools venv, `make tools`) sends
`--requests` streamed completions at a constant `--rate` with a local tokenizer; per metric
the mean, p50 and p90 measured by the client and simulated by the emulator (its per-request
log), the relative error of the means, and the largest difference between the log and an
offline simulation of the logged arrivals.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from _tools.emulator_check import Check, run_check

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in Check().__dict__.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = ap.parse_args()
    check = Check(**vars(args))
    root = Path(__file__).resolve().parents[1]
    tools = Path(os.environ.get("SERVECAST_TOOLS_VENV", root / ".venv-tools")) / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        r = run_check(tools, Path(tmp), check)
    print(f"== {check}")
    print(f"{'metric':<8} {'source':<10} {'mean':>8} {'p50':>8} {'p90':>8}   (ms)")
    for k in ("ttft", "tpot"):
        for src in ("client", "sim"):
            v = r[f"{src}_{k}_ms"]
            print(f"{k:<8} {src:<10} {v.mean():8.2f} {np.median(v):8.2f} "
                  f"{np.quantile(v, 0.9):8.2f}")
        print(f"{k:<8} {'mean err':<10} {100 * r[f'{k}_rel_err']:+7.2f}%")
    print(f"log vs offline simulation: largest difference {r['offline_max_diff_ms']:.2g} ms")


if __name__ == "__main__":
    main()
