"""Output-length acceptance numbers: every model next to its baselines (tokens).

  .venv/bin/python benchmarks/output_length_eval.py [--text-rows N] [--text-seed S]
      [--skip-text] [--traces T] [--train-frac 0.7] [--skip-whatif]

Azure conversation / code (time split 70/30), each with and without the prompt-length history
features, Mooncake with and without prefix features,
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
from servecast.predictors.output_length.core import online_evaluate  # noqa: E402
from servecast.predictors.output_length.features import ALL  # noqa: E402
from servecast.predictors.output_length.history import HISTORY  # noqa: E402
from servecast.predictors.output_length.metrics import split  # noqa: E402
from servecast.predictors.output_length.settings import PRESET  # noqa: E402
from servecast.predictors.output_length.train import load_requests  # noqa: E402

KEYS = ["mae_p50", "kendall_tau", "coverage_p90", "pinball_p50", "pinball_p90", "pinball_p99"]


def row(name: str, m: dict) -> dict:
    return {"model": name, **{k: round(m[k], 4) for k in KEYS}}


def compare(train, test, models: dict) -> pl.DataFrame:
    """Each model on `test`; models marked online also with online calibration, and under a
    drift: every test output tripled, static / online / online with fixed conformal levels."""
    import copy

    rows = []
    tripled = test.with_columns(pl.col("output_tokens") * 3)
    for name, (kind, params, online) in models.items():
        t0 = time.perf_counter()
        model = create(kind, **params).fit(train)
        fit_s = time.perf_counter() - t0
        rows.append({**row(name, model.evaluate(test)), "fit_s": round(fit_s, 1)})
        if not online:
            continue
        rows.append({**row(name + " outputs x3", model.evaluate(tripled)), "fit_s": None})
        for label, frame, rate in ((" +online calib", test, None),
                                   (" outputs x3 +online calib", tripled, None),
                                   (" outputs x3 +online, fixed levels", tripled, 0.0)):
            live = copy.deepcopy(model)  # its own calibrator rate (the replay copies again)
            if rate is not None:
                live.calibrator.rate = rate
            rows.append({**row(name + label, online_evaluate(live, frame)), "fit_s": None})
    return pl.DataFrame(rows)


def replay(test: pl.DataFrame):
    """(prompt, output, arrival_s scaled to load 0.9, config) as `whatif` replays `test`."""
    from servecast.simulator import ServingConfig, capacity, scale_arrivals

    cfg = ServingConfig()
    prompt, out = test["prompt_tokens"].to_numpy(), test["output_tokens"].to_numpy()
    arr = scale_arrivals(test["arrival_s"].to_numpy(), 0.9 * capacity(prompt, out, cfg))
    return prompt, out, arr, cfg


def share_of(jct: float, res: pl.DataFrame) -> float:
    """Share of oracle SJF's mean-JCT reduction over FCFS (in `res`) that `jct` (s) reaches."""
    ref = dict(zip(res["policy"], res["mean_jct_s"], strict=True))
    return (ref["fcfs"] - jct) / (ref["fcfs"] - ref["sjf_oracle"])


def replay_aware(model, test: pl.DataFrame, res: pl.DataFrame) -> None:
    """SJF(pred p50) where each request's prompt-length history holds only the requests that
    completed before it arrived in the replay (completion times of the FCFS replay), as a
    scheduler calling Estimator.output_length / observe would see them; `predict` on the
    frame instead estimates completions with history.finish_s (~33 tokens/s)."""
    import tempfile

    import numpy as np

    from servecast.predictors.output_length.runtime import Runtime
    from servecast.simulator import simulate

    prompt, out, arr, cfg = replay(test)
    done = arr + simulate(arr, prompt, out, config=cfg)["jct_s"]
    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.load(model.save(Path(d) / "m"))
    t = test["arrival_s"].to_numpy()  # the model's clock: the trace's seconds
    events = sorted([(a, 1, i) for i, a in enumerate(arr)] + [(c, 0, i) for i, c in
                                                              enumerate(done)])
    p50 = np.zeros(len(arr))
    for _, arrives, i in events:
        if arrives:
            p50[i] = rt.output_length(float(prompt[i]), arrival_s=float(t[i])).p50
        else:
            rt.observe(None, float(prompt[i]), float(out[i]), arrival_s=float(t[i]))
    jct = simulate(arr, prompt, out, priority=p50, config=cfg)["jct_s"].mean()
    print(f"SJF(pred p50, history of requests completed in the FCFS replay): mean JCT {jct:.3f} s, "
          f"{share_of(jct, res):.1%} of oracle SJF's reduction")


def jitter_spread(test: pl.DataFrame, p50, res: pl.DataFrame, sigma: float = 0.02,
                  draws: int = 10) -> None:
    """The replay's own noise: SJF's share when every predicted p50 is multiplied by
    exp(N(0, sigma)), which barely moves Kendall tau (printed) and MAE but reorders near-ties
    in the queue (one replay is one draw of a chaotic queue)."""
    import numpy as np

    from servecast.predictors.metrics import kendall_tau
    from servecast.simulator import simulate

    prompt, out, arr, cfg = replay(test)
    rng = np.random.default_rng(0)
    shares, taus = [], []
    for _ in range(draws):
        key = np.asarray(p50) * np.exp(rng.normal(0.0, sigma, len(arr)))
        shares.append(share_of(simulate(arr, prompt, out, priority=key, config=cfg)["jct_s"]
                               .mean(), res))
        taus.append(kendall_tau(key, out))
    print(f"p50 x exp(N(0, {sigma})), {draws} draws (Kendall tau {min(taus):.4f}-{max(taus):.4f}"
          f" vs {kendall_tau(np.asarray(p50), out):.4f}): share {np.mean(shares):.1%} "
          f"+- {np.std(shares):.1%} (min {min(shares):.1%}, max {max(shares):.1%})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--text-rows", type=int, default=20000)
    ap.add_argument("--text-seed", type=int, default=0, help="which conversations are sampled")
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-whatif", action="store_true")
    ap.add_argument("--fast", action="store_true", help="demo GBM settings (80 trees)")
    ap.add_argument("--traces", default="azure_conv,azure_code,mooncake_conversation")
    ap.add_argument("--train-frac", type=float, default=0.7, help="time split (0.7: 70/30)")
    args = ap.parse_args()
    pl.Config.set_tbl_rows(40)
    pl.Config.set_tbl_cols(12)
    pl.Config.set_tbl_width_chars(220)
    pl.Config.set_fmt_str_lengths(40)
    store = llm_store()
    meta = PRESET.pick(args.fast).params("metadata")
    traces = args.traces.split(",")
    base = {"global": ("global", {}, False), "segment median": ("segment", {}, False),
            "prompt-bin median": ("prompt_bins", {}, False),
            "sliding window": ("sliding_window", {}, False)}
    frac = args.train_frac
    no_history = {**meta, "columns": [c for c in ALL if c not in HISTORY]}
    for trace in [t for t in ("azure_conv", "azure_code") if t in traces]:
        train, test, how = split(load_requests(store, trace), train_frac=frac)
        print(f"\n== {trace}: {how}, train {train.height}, test {test.height}")
        print(compare(train, test, {**base,
                                    "GBM without history": ("metadata", no_history, False),
                                    "metadata GBM": ("metadata", meta, True)}))
    if "mooncake_conversation" in traces:
        train, test, how = split(load_requests(store, "mooncake_conversation"), train_frac=frac)
        print(f"\n== mooncake_conversation: {how}")
        print(compare(train, test, {
            **base, "GBM without prefix": ("metadata", {**meta, "columns": ["prompt_tokens"]},
                                           False),
            "GBM prefix, no history": ("metadata", no_history, False),
            "GBM with prefix": ("metadata", meta, True)}))
    if not args.skip_whatif:
        from servecast.simulator import sjf_gain, whatif

        train, test, _ = split(load_requests(store, "azure_conv"))
        model = create("metadata", **meta).fit(train)
        pred = model.predict(test)
        t0 = time.perf_counter()
        res = whatif(test, pred["p50"].to_numpy(), pred["p90"].to_numpy(), load=0.9)
        print(f"\n== what-if azure_conv test part at load 0.9 ({time.perf_counter() - t0:.0f} s)")
        print(res)
        print(f"SJF(pred p50) reaches {sjf_gain(res):.1%} of oracle SJF's mean-JCT reduction "
              f"(SJF by predicted p90: {sjf_gain(res, 'sjf_p90'):.1%})")
        replay_aware(model, test, res)
        jitter_spread(test, pred["p50"].to_numpy(), res)
    if not args.skip_text:
        df = load_requests(store, "sharegpt", text=True)
        sessions = df["session_id"].unique().sort().sample(fraction=1.0, seed=args.text_seed,
                                                           shuffle=True)
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
            "text model": ("text", PRESET.pick(args.fast).params("text"), False)})
        print(res)
        mae = dict(zip(res["model"], res["mae_p50"], strict=True))
        print(f"text model MAE vs prompt-length-only: "
              f"{mae['text model'] / mae['prompt-length-only GBM'] - 1:+.1%}")


if __name__ == "__main__":
    main()
