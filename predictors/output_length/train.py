"""Train and evaluate an output-length model on a trace in the store (CLI and demo entry)."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from servecast.errors import InvalidInputError
from servecast.predictors.output_length import create
from servecast.predictors.output_length.core import OutputLengthModel, online_evaluate
from servecast.predictors.output_length.metrics import split
from servecast.predictors.output_length.settings import PRESET, TrainSettings

BASELINES = ("global", "segment", "prompt_bins")
#: the text model's extra baselines (baselines.py; evaluated, not served)
TEXT_BASELINES = {"previous_turn": "PreviousTurn", "tfidf_ridge": "TfidfRidge"}


def load_requests(store, trace: str, text: bool = False) -> pl.DataFrame:
    """The trace's llm_requests rows (text columns only when `text`)."""
    rel = store.requests(trace)
    cols = [c for c in rel.columns if text or c not in ("prompt_text", "response_text")]
    df = rel.select(*cols).pl()
    if text and df["prompt_text"].null_count() == df.height:
        raise InvalidInputError(f"trace {trace!r} has no prompt_text; drop --text")
    return df


def train_output_length(store, trace: str, out_dir: str | Path, fast: bool = True,
                        text: bool = False, model: str | None = None,
                        max_rows: int | None = None, seed: int = 0,
                        params: dict | None = None,
                        settings: TrainSettings | None = None) -> dict:
    """Fit `model` (default metadata, or text with `text`) on the training split of `trace`,
    evaluate it and the baselines on the held-out split, save it to `out_dir`. `settings`
    default to the fast or full preset (`settings.PRESET`); `params` override the model's
    constructor parameters they set.

    The model card records `baselines` (headline metrics), `warnings` and `beats_baselines`:
    a model that loses to a baseline on the held-out split (higher MAE of p50, or lower Kendall
    tau) is still saved, with a warning naming the baseline and both numbers.

    Returns {"model", "split", "metrics", "online_metrics", "baselines", "warnings",
    "seconds", "path", "test"} (`test`: the held-out request rows).
    """
    name = model or ("text" if text else "metadata")
    settings = settings or PRESET.pick(fast)
    df = load_requests(store, trace, text=name == "text")
    if max_rows is None and name == "text":
        max_rows = settings.text_rows or None
    if max_rows and df.height > max_rows:
        df = df.sample(max_rows, seed=seed).sort("request_id")
    train, test, how = split(df, seed=seed)
    params = {**settings.params(name), **(params or {})}
    t0 = time.perf_counter()
    predictor: OutputLengthModel = create(name, **params).fit(train)
    seconds = time.perf_counter() - t0
    metrics = predictor.evaluate(test)
    baselines = {b: create(b).fit(train).evaluate(test) for b in BASELINES}
    if name == "text":  # the obvious comparison: same split, prompt length only
        baselines["prompt_length_only"] = create(
            "metadata", columns=["prompt_tokens"], **settings.params("metadata")
        ).fit(train).evaluate(test)
        from servecast.predictors.output_length import baselines as extra

        for b, cls in TEXT_BASELINES.items():
            baselines[b] = getattr(extra, cls)().fit(train).evaluate(test)
    warnings = losses(metrics, baselines)
    predictor.card.update({"trace": trace, "split": predictor.card["split"] | {
                               "rule": how, "train_rows": train.height,
                               "test_rows": test.height}, "metrics": metrics,
                           "baselines": {k: _headline(v) for k, v in baselines.items()},
                           "fit_seconds": seconds, "fast": fast, "warnings": warnings,
                           "beats_baselines": not warnings})
    path = predictor.save(out_dir)
    online = online_evaluate(predictor, test) if name != "text" else None
    return {"model": predictor, "split": how, "metrics": metrics, "online_metrics": online,
            "baselines": baselines, "warnings": warnings, "seconds": seconds, "path": path,
            "test": test}


def losses(metrics: dict, baselines: dict[str, dict]) -> list[str]:
    """One message per baseline the model does not beat on the held-out split: a lower
    MAE of p50 (tokens) or a higher Kendall tau than the model's."""
    out = []
    for b, m in baselines.items():
        if m["mae_p50"] < metrics["mae_p50"]:
            out.append(f"the {b} baseline has a lower MAE of p50 on the held-out split "
                       f"({m['mae_p50']:.1f} vs the model's {metrics['mae_p50']:.1f} tokens)")
        if m["kendall_tau"] > metrics["kendall_tau"]:
            out.append(f"the {b} baseline ranks the held-out outputs better (Kendall tau "
                       f"{m['kendall_tau']:.3f} vs the model's {metrics['kendall_tau']:.3f})")
    return out


def _headline(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "segments"}


def summary(result: dict) -> pl.DataFrame:
    """One row per model (trained one first, then baselines): the headline metrics."""
    keys = ["mae_p50", "kendall_tau", "coverage_p90", "pinball_p50", "pinball_p90",
            "pinball_p99"]
    rows = [{"model": result["model"].name, **{k: result["metrics"][k] for k in keys}}]
    if result.get("online_metrics"):
        rows.append({"model": result["model"].name + " (online calibration)",
                     **{k: result["online_metrics"][k] for k in keys}})
    rows += [{"model": b, **{k: m[k] for k in keys}} for b, m in result["baselines"].items()]
    return pl.DataFrame(rows)
