"""ShareGPT text model against honest baselines on the same rows (split by conversation).

  .venv/bin/python benchmarks/output_length_text.py [--rows N] [--seed 0] [--skip-ablation]
      [--baselines-only]

Models: global median, prompt-bin median, previous-turn output, TF-IDF + ridge (prompt text,
prompt length, previous turn's output), the text model without its lexical feature and the
default text model (pretrained encoder + lexical feature); MAE of p50 in tokens, Kendall tau
of p50, p90 coverage and fit seconds. `--rows N`: the first N rows of the trace (whole
conversations are kept or dropped by the split; 0 = all). Embeddings are cached on disk
(`$SERVECAST_CACHE`), so the first run pays for them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _stores import llm_store  # noqa: E402

from servecast.predictors.output_length import baselines, create  # noqa: E402
from servecast.predictors.output_length.metrics import split  # noqa: E402
from servecast.predictors.output_length.settings import PRESET  # noqa: E402
from servecast.predictors.output_length.train import load_requests  # noqa: E402

KEYS = ["mae_p50", "kendall_tau", "coverage_p90"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="which conversations are held out")
    ap.add_argument("--skip-ablation", action="store_true",
                    help="only the default text model and the baselines")
    ap.add_argument("--baselines-only", action="store_true", help="no text model (no embedding)")
    args = ap.parse_args()
    pl.Config.set_tbl_rows(20)
    df = load_requests(llm_store(("sharegpt",)), "sharegpt", text=True)
    if args.rows:
        df = df.head(args.rows)
    train, test, how = split(df, seed=args.seed)
    print(f"sharegpt ({df.height} rows): {how}, train {train.height}, test {test.height}")
    models = {"global median": lambda: create("global"),
              "prompt-bin median": lambda: create("prompt_bins"),
              "previous-turn output": baselines.PreviousTurn,
              "TF-IDF + ridge": baselines.TfidfRidge}
    if not (args.skip_ablation or args.baselines_only):
        models["text model without lexical"] = lambda: create(
            "text", **{**PRESET.full.params("text"), "lexical": False})
    if not args.baselines_only:
        models["text model (default)"] = lambda: create("text", **PRESET.full.params("text"))
    rows = []
    for name, make in models.items():
        t0 = time.perf_counter()
        model = make().fit(train)
        fit_s = time.perf_counter() - t0
        m = model.evaluate(test)
        rows.append({"model": name, **{k: round(m[k], 4) for k in KEYS},
                     "fit_s": round(fit_s, 1)})
        print(rows[-1], flush=True)
    print(pl.DataFrame(rows))


if __name__ == "__main__":
    main()
