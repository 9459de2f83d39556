"""Online calibration through `Estimator.observe_output` on another LLM's answers.

  .venv/bin/python benchmarks/output_length_online.py [--train azure_conv]
      [--serve mooncake_conversation] [--n 2000] [--warmup 300] [--window 250]

Trains the metadata model (full settings) on the first trace, serves the second one request at
a time through an Estimator (estimate on arrival, completion reported right after), with and
without reporting completions; prints p90 coverage and MAE of p50 after the warm-up, per
window, and the learned level (scale).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _stores import llm_store  # noqa: E402

from servecast.estimator import Estimator  # noqa: E402
from servecast.predictors.output_length import create  # noqa: E402
from servecast.predictors.output_length.runtime import serve_replay  # noqa: E402
from servecast.predictors.output_length.settings import PRESET  # noqa: E402
from servecast.predictors.output_length.train import load_requests  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="azure_conv")
    ap.add_argument("--serve", default="mooncake_conversation")
    ap.add_argument("--n", type=int, default=2000, help="requests served")
    ap.add_argument("--warmup", type=int, default=300, help="requests before scoring")
    ap.add_argument("--window", type=int, default=250)
    args = ap.parse_args()
    store = llm_store()
    train = load_requests(store, args.train)
    other = load_requests(store, args.serve).sort("arrival_s").head(args.n)
    y = other["output_tokens"].to_numpy()
    print(f"train {args.train} ({train.height} rows, median output "
          f"{np.median(train['output_tokens'].to_numpy()):.0f}); serve {args.serve} "
          f"({other.height} rows, median output {np.median(y):.0f})")
    with tempfile.TemporaryDirectory() as d:
        path = create("metadata", **PRESET.full.params("metadata")).fit(train).save(
            Path(d) / "output_length")
        static = serve_replay(Estimator.load(path), other, observe=False)
        est = Estimator.load(path)
        online = serve_replay(est, other, observe=True)
    w = args.warmup
    for name, pred in (("static", static), ("observe_output", online)):
        cov = y[w:] <= pred[w:, 1]
        wins = [f"{np.mean(y[s:s + args.window] <= pred[s:s + args.window, 1]):.3f}"
                for s in range(0, len(y), args.window)]
        print(f"{name:>15}: after {w} requests p90 coverage {cov.mean():.3f}, MAE p50 "
              f"{np.mean(np.abs(y[w:] - pred[w:, 0])):.1f}; per {args.window}: "
              f"{' '.join(wins)}")
    print(f"learned level: scale {est.output_calibration()['scale']:.3f}, p90 target level "
          f"{est.output_calibration()['levels'][0]:.3f}")


if __name__ == "__main__":
    main()
