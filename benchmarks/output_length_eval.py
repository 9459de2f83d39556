"""Output-length acceptance numbers: every model next to its baselines (tokens).

  .venv/bin/python benchmarks/output_length_eval.py [--text-rows N] [--skip-text] [--traces T]

Azure conversation / code (time split 70/30), Mooncake with and without prefix features,
ShareGPT text model vs a prompt-length-only model (seeded split by conversation), and the
what-if replay of Azure conversation at load 0.9.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _stores import llm_store  # noqa: E402

from servecast.predictors.output_length import create  # noqa: E402
from servecast.predictors.output_length.metrics import split  # noqa: E402
from servecast.predictors.output_length.train import SETTINGS, load_requests  # noqa: E402

KEYS = ["mae_p50", "kendall_tau", "coverage_p90", "pinball_p50", "pinball_p90", "pinball_p99"]


def row(name: str, m: dict) -> dict:
    return {"model": name, **{k: round(m[k], 4) for k in KEYS}}


def compare(train, test, models: dict) -> pl.DataFrame:
    rows = []
    for name, (kind, params, online) in models.items():
        t0 = time.perf_counter()
        model = create(kind, **params).fit(train)
        fit_s = time.perf_counter() - t0
        rows.append({**row(name, model.evaluate(test)), "fit_s": round(fit_s, 1)})
        if online:
            rows.append({**row(name + " +online calib", model.evaluate(test, online=True)),
                         "fit_s": None})
    return pl.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--text-rows", type=int, default=20000)
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-whatif", action="store_true")
    ap.add_argument("--fast", action="store_true", help="demo GBM settings (80 trees)")
    ap.add_argument("--traces", default="azure_conv,azure_code,mooncake_conversation")
    args = ap.parse_args()
    pl.Config.set_tbl_rows(40)
    pl.Config.set_tbl_cols(12)
    store = llm_store()
    meta = SETTINGS["metadata"][args.fast]
    traces = args.traces.split(",")
    base = {"global": ("global", {}, False), "segment median": ("segment", {}, False),
            "prompt-bin median": ("prompt_bins", {}, False),
            "sliding window": ("sliding_window", {}, False)}
    for trace in [t for t in ("azure_conv", "azure_code") if t in traces]:
        train, test, how = split(load_requests(store, trace))
        print(f"\n== {trace}: {how}, train {train.height}, test {test.height}")
        print(compare(train, test, {**base, "metadata GBM": ("metadata", meta, True)}))
    if "mooncake_conversation" in traces:
        train, test, how = split(load_requests(store, "mooncake_conversation"))
        print(f"\n== mooncake_conversation: {how}")
        print(compare(train, test, {
            **base, "GBM without prefix": ("metadata", {**meta, "columns": ["prompt_tokens"]},
                                           False),
            "GBM with prefix": ("metadata", meta, True)}))
    if not args.skip_whatif:
        from servecast.analytics.whatif import sjf_gain, whatif

        train, test, _ = split(load_requests(store, "azure_conv"))
        model = create("metadata", **meta).fit(train)
        pred = model.predict(test)
        t0 = time.perf_counter()
        res = whatif(test, pred["p50"].to_numpy(), pred["p90"].to_numpy(), load=0.9)
        print(f"\n== what-if azure_conv test part at load 0.9 ({time.perf_counter() - t0:.0f} s)")
        print(res)
        print(f"SJF(pred p50) reaches {sjf_gain(res):.1%} of oracle SJF's mean-JCT reduction")
    if not args.skip_text:
        df = load_requests(store, "sharegpt", text=True)
        sessions = df["session_id"].unique().sort().sample(fraction=1.0, seed=0, shuffle=True)
        keep, n = [], 0
        counts = dict(df.group_by("session_id").len().iter_rows())
        for s in sessions.to_list():
            if n >= args.text_rows:
                break
            keep.append(s)
            n += counts[s]
        df = df.filter(pl.col("session_id").is_in(keep))
        train, test, how = split(df)
        print(f"\n== sharegpt ({df.height} rows of {len(keep)} conversations): {how}")
        res = compare(train, test, {
            "prompt-length-only GBM": ("metadata", {**meta, "columns": ["prompt_tokens"]},
                                       False),
            "metadata GBM (session)": ("metadata", meta, False),
            "text model": ("text", SETTINGS["text"][args.fast], False)})
        print(res)
        mae = dict(zip(res["model"], res["mae_p50"], strict=True))
        print(f"text model MAE vs prompt-length-only: "
              f"{mae['text model'] / mae['prompt-length-only GBM'] - 1:+.1%}")


if __name__ == "__main__":
    main()
