"""Round trip of a synthesized workload through the Mooncake export: fit the Azure
conversation trace, synthesize one source span, write it as Mooncake JSONL
(`exports.write_requests`), ingest it back with the `mooncake` adapter and compare with the
source file: inter-arrival CV (criterion: within 10%) and two-sample KS of prompt and output
lengths (criterion: <= 0.05). Also prints the timestamp quantization of the Mooncake
trace and the inter-arrival fit that was reported for it before quantization was checked.

    .venv/bin/python benchmarks/export_roundtrip.py [--seed 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from servecast.analytics import arrivals, exports, synth
from servecast.store import Store

DATA = Path(os.environ.get("SERVECAST_DATA", Path(__file__).resolve().parents[1].parent
                           / "shared" / "datasets"))
CONV = DATA / "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"


def cv(t: np.ndarray) -> float:
    g = np.diff(np.sort(t))
    return float(g.std() / g.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    src = pd.read_csv(CONV)
    t = pd.to_datetime(src["TIMESTAMP"]).astype("int64").to_numpy() / 1e9
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "rt.duckdb")
        store.ingest("azure-llm", [CONV], trace="conv")
        store.ingest("mooncake", [DATA / "llm/mooncake"], trace="mooncake")
        model = synth.fit_workload(store, "conv", window_s=600)
        df = synth.synthesize(model, t.max() - t.min(), seed=args.seed)
        path = exports.write_requests(df, "mooncake", Path(tmp) / "syn.jsonl")
        store.ingest("mooncake", [path], trace="syn")
        back = store.sql("SELECT arrival_s, prompt_tokens, output_tokens FROM llm_requests "
                         "WHERE trace = 'syn'")
        q = arrivals.timestamp_quantization(store, "mooncake")
        fits = arrivals.interarrival_fits(store, "mooncake").sort("ks")
        store.close()
    c0, c1 = cv(t), cv(back["arrival_s"].to_numpy())
    ks_p = stats.ks_2samp(back["prompt_tokens"], src["ContextTokens"]).statistic
    ks_o = stats.ks_2samp(back["output_tokens"], src["GeneratedTokens"]).statistic
    print(f"azure conv -> synth -> Mooncake JSONL -> ingest: rows {len(t):,} -> "
          f"{back.height:,}")
    print(f"inter-arrival CV {c0:.3f} -> {c1:.3f} ({abs(c1 / c0 - 1):.1%}, criterion 10%: "
          f"{'met' if abs(c1 / c0 - 1) <= 0.10 else 'NOT met'})")
    print(f"KS prompt {ks_p:.4f}, output {ks_o:.4f} (criterion 0.05: "
          f"{'met' if max(ks_p, ks_o) <= 0.05 else 'NOT met'})")
    print(f"mooncake timestamps: zero-gap share {q['zero_gap_share']:.3f}, grid "
          f"{q['grid_s']:.3f} s, quantized {q['quantized']}; the fit characterize reported "
          f"before the check: {fits.item(0, 'family')} (KS {fits.item(0, 'ks'):.3f}, on the "
          f"{fits.item(0, 'n'):,} positive gaps only)")


if __name__ == "__main__":
    main()
