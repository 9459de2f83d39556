"""Time single step-time calls of the numpy runtime (the simulator's hot path): p50 / p99 in
microseconds per batch shape, after compiling the configuration once.

    .venv/bin/python benchmarks/step_time_runtime.py --models models/step_time [--calls 20000]

Train the model first: `servecast train step-time --db STORE --out models/step_time`.
Target (issue 23): p50 <= 50 us per call.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

BATCHES = {
    "decode 64x1024": ([], [1024] * 64),
    "prefill 2048 + decode 64x1024": ([2048], [1024] * 64),
    "4 chunks of 512 + decode 128x2048": ([512] * 4, [2048] * 128),
    "decode 1x128": ([], [128]),
}


def main() -> None:
    from servecast.predictors.step_time.runtime import Runtime

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    rt = Runtime.load(args.models)
    t0 = time.perf_counter()
    engine = rt.engine("llama-3.1-8b", "h100-sxm")
    print(f"compile llama-3.1-8b on h100-sxm: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    for name, (prefill, decode) in BATCHES.items():
        times = np.empty(args.calls)
        for i in range(args.calls):
            a = time.perf_counter()
            engine.step_ms(prefill, None, decode)
            times[i] = time.perf_counter() - a
        print(f"{name:36s} {engine.step_ms(prefill, None, decode):8.3f} ms  "
              f"p50 {np.median(times) * 1e6:5.1f} us  p99 {np.percentile(times, 99) * 1e6:5.1f} us")


if __name__ == "__main__":
    main()
