"""Output-length commands: `train output-length`, `estimate output-length`, `whatif`."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import DbOption, FastOption, console, given, group, print_frame
from servecast.predictors.output_length.settings import PRESET


def register(app: typer.Typer) -> None:
    group(app, "train").command(
        "output-length")(train_output_length)
    group(app, "estimate").command(
        "output-length")(estimate_output_length)
    app.command("whatif")(whatif)


def train_output_length(
    ctx: typer.Context,
    trace: str = typer.Argument(..., help="an llm_requests trace in the store"),
    out: Path = typer.Option(..., "--out", help="model dir to write"),
    text: bool = typer.Option(False, "--text", help="text model (needs prompt_text)"),
    model: str = typer.Option(None, "--model",
                              help="metadata | text | global | segment | prompt_bins | "
                                   "sliding_window (default metadata, text with --text)"),
    fast: bool = FastOption,
    max_rows: int = typer.Option(0, "--max-rows", help="subsample the trace (0 = all; the "
                                 "fast preset samples the text model's rows)"),
    n_estimators: int = typer.Option(PRESET.full.n_estimators, "--trees", min=1,
                                     help="metadata model: LightGBM trees per head"),
    finetune_epochs: int = typer.Option(
        PRESET.full.finetune_epochs, "--finetune-epochs", min=0,
        help="text model: first fine-tune the sentence encoder on the training rows for N "
             "epochs (slow on a CPU; a GPU is used when present)"),
    db: Path = DbOption,
) -> None:
    """Train an output-length predictor on any trace with prompt and output lengths; print its
    held-out metrics next to the baselines. Warns (stderr; also in the model card) when the
    model does not beat a baseline on the held-out split."""
    from servecast.predictors.output_length.train import summary
    from servecast.predictors.output_length.train import train_output_length as run
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        settings = PRESET.pick(fast, **given(ctx, finetune_epochs=finetune_epochs,
                                             n_estimators=n_estimators))
        result = run(store, trace, out, fast=fast, text=text, model=model,
                     max_rows=max_rows or None, settings=settings)
    print_frame(summary(result), title=f"{trace}: {result['split']} (tokens)")
    console.print(f"saved {result['path']} (fit {result['seconds']:.1f} s)")
    for w in result["warnings"]:
        typer.echo(f"warning: {w}", err=True)


def estimate_output_length(
    models: Path = typer.Option(..., "--models", help="model dir from `train output-length`"),
    prompt_tokens: list[int] = typer.Option(None, "--prompt-tokens", help="one per request"),
    model: str = typer.Option(None, "--model", help="model name (e.g. ChatGPT)"),
    log_type: str = typer.Option(None, "--log-type", help="log type (e.g. Conversation log)"),
    prompt_text: str = typer.Option(None, "--prompt-text", help="prompt (text models)"),
    trace: str = typer.Option(None, "--trace", help="estimate every request of a trace instead"),
    db: Path = DbOption,
) -> None:
    """Output-length quantiles (tokens) for given prompts, or for a whole trace."""
    import polars as pl

    from servecast.errors import InvalidInputError
    from servecast.estimator import Estimator

    est = Estimator.load(models)
    if trace:
        from servecast.predictors.output_length.train import load_requests
        from servecast.store import Store

        with Store(db, read_only=True) as store:
            df = load_requests(store, trace, text=True)
        pred = est.output_length_batch(df)
        print_frame(pl.concat([df.select("request_id", "prompt_tokens", "output_tokens"), pred],
                              how="horizontal"))
        return
    if not prompt_tokens:
        raise InvalidInputError("pass --prompt-tokens N (repeatable) or --trace NAME")
    if prompt_text is not None and not est.reads_text():
        typer.echo(f"warning: --prompt-text ignored: the output-length model in {models} reads "
                   "no text (train one with `servecast train output-length --text`)", err=True)
    rows = [{"prompt_tokens": p, **est.output_length(p, model=model, log_type=log_type,
                                                     prompt_text=prompt_text)._asdict()}
            for p in prompt_tokens]
    print_frame(pl.DataFrame(rows), title="output length (tokens)")


def whatif(
    trace: str = typer.Argument(..., help="an llm_requests trace with arrivals"),
    models: Path = typer.Option(None, "--models",
                                help="output-length model dir (default: train one, fast)"),
    load: float = typer.Option(0.9, "--load", help="arrival rate / saturation throughput"),
    kv_tokens: int = typer.Option(
        40_000, "--kv-tokens",
        help="KV-cache budget, tokens (a 7B on a 40 GB GPU; simulator.replay.WHATIF_KV_TOKENS)"),
    iter_base_ms: float = typer.Option(7.0, "--iter-base-ms", help="a: ms per iteration"),
    iter_token_ms: float = typer.Option(0.09, "--iter-token-ms", help="b: ms per batch token"),
    iter_kv_ms: float = typer.Option(
        0.0003, "--iter-kv-ms", help="c: ms per cached KV token read in decode (0: a + b*tokens)"),
    watermark: float = typer.Option(0.01, "--watermark", help="KV share kept free (vLLM 1%)"),
    aging: float = typer.Option(2.0, "--aging",
                                help="sjf_pred_aging: priority tokens per s waited"),
    max_rows: int = typer.Option(0, "--max-rows", help="replay only the first N test requests"),
    seeds: int = typer.Option(
        0, "--seeds", help="also the restated criterion: the mean share over loads 0.8 / 0.9 / "
        "0.95 and N seeds with its 90% interval (5 seeds: ~15 replays of 5 policies)"),
    db: Path = DbOption,
) -> None:
    """Replay the held-out part of TRACE on one continuous-batching instance under FCFS,
    SJF (predicted p50 / oracle / predicted p50 with aging) and KV admission (predicted p90 /
    worst case)."""
    from servecast import simulator as sim
    from servecast.store import Store

    cfg = sim.ServingConfig(iter_base_ms=iter_base_ms, iter_token_ms=iter_token_ms,
                        iter_kv_ms=iter_kv_ms, watermark=watermark, kv_tokens=kv_tokens,
                        aging_tokens_per_s=aging)
    with Store(db, read_only=True) as store:
        test, p50, p90 = sim.heldout(store, trace, models=models, max_rows=max_rows or None)
    result = sim.whatif(test, p50, p90, load=load, config=cfg)
    print_frame(result, title=f"what-if {trace} at load {load}")
    gain = sim.sjf_gain(result)
    console.print(sim.no_gain_reason(result) if gain is None else
                  f"SJF by predicted p50 achieves {gain:.0%} of the oracle SJF mean-JCT "
                  "reduction over FCFS (one replay; --seeds 5 for the mean over loads and seeds)")
    if seeds:
        summary = sim.share_summary(sim.whatif_share(test, p50, p90, seeds=seeds, config=cfg))
        print_frame(summary, title=f"share of the oracle's mean-JCT gain, loads 0.8 / 0.9 / "
                                   f"0.95 x {seeds} seeds (90% interval of the mean)")
