"""Shared part of the inner leave-one-GPU-out loops (`gemm_inner_logo.py`,
`attention_inner_logo.py`): the sampled operator frame, physics-constant overrides from the
command line and the nested folds. Inner scores never read the outer (held-out) GPU: they
are what physics constants and residual settings are chosen by.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_latency_logo import open_store  # noqa: E402


def sampled_frame(db: str | None, ops: list[str], rows: int, by: list[str],
                  seed: int) -> pl.DataFrame:
    """aiconfigurator's operator rows of `ops` from the store `db` (ingested into a
    temporary store without it), at most `rows` per group of the `by` columns, drawn with
    `seed`."""
    from servecast.predictors.operator_latency.data import operator_frame

    store = open_store(db, [("aiconfigurator", "gpu/aiconfigurator", "aiconfigurator")])
    frame = operator_frame(store).filter(pl.col("op").is_in(ops))
    return sample(frame, rows, by, seed)


def sample(frame: pl.DataFrame, rows: int, by: list[str], seed: int) -> pl.DataFrame:
    """At most `rows` rows of `frame` per group of the `by` columns, drawn with `seed`."""
    return pl.concat([part.sample(min(rows, part.height), seed=seed)
                      for _k, part in frame.group_by(by, maintain_order=True)])


def physics_value(flag: str, text: str) -> tuple[str, float]:
    """(name, value) of one NAME=VALUE override of a float constant of
    `servecast.predictors.operator_latency.physics`; exit 2 naming `flag` and the fix
    when NAME is not such a constant or VALUE is not a number."""
    from servecast.predictors.operator_latency import physics

    name, _eq, value = text.partition("=")
    if not isinstance(getattr(physics, name, None), float):
        fail(f"{flag} {text}: physics has no float constant {name!r}; expected NAME=VALUE "
             "with NAME a numeric constant of predictors/operator_latency/physics.py, "
             "e.g. TILE_TRAFFIC=0.03")
    try:
        number = float(value)
    except ValueError:
        fail(f"{flag} {text}: {value!r} is not a number")
    return name, number


def fail(message: str) -> NoReturn:
    """The benchmark CLIs' bad-input exit: `message` on stderr, exit code 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def fit_score(train: pl.DataFrame, test: pl.DataFrame, trees: int) -> dict[str, float]:
    """MdAPE (%) per residual key (`runtime.forest_key`: op, and dtype for GEMMs) on `test`
    of the operator model (relative view, `trees` trees) fitted on `train`."""
    from servecast.predictors.operator_latency.predictor import OperatorLatencyModel

    model = OperatorLatencyModel(view="relative", trees=trees).fit(train)
    return {key: res["model"]["mdape"] for key, res in model.evaluate(test).items()}


def nested_folds(frame: pl.DataFrame, outer_too: bool = False):
    """Yield (outer, inner, fit rows, test rows): for every outer GPU of `frame` and every
    other GPU `inner`, the rows of the GPUs but those two and those of `inner` (the outer
    GPU is never read). `outer_too` adds inner == outer: fit on every other GPU, test on
    the outer one (the held-out score; report it, never choose by it)."""
    devices = sorted(set(frame["device"].to_list()))
    for outer in devices:
        for inner in ([outer] if outer_too else []) + [d for d in devices if d != outer]:
            yield (outer, inner, frame.filter(~pl.col("device").is_in([outer, inner])),
                   frame.filter(pl.col("device") == inner))


def nested_scores(frame: pl.DataFrame, trees: int, outer_too: bool = False) -> pl.DataFrame:
    """(outer, inner, key, mdape) of every fold of `nested_folds`."""
    return pl.DataFrame([{"outer": outer, "inner": inner, "key": key, "mdape": mdape}
                         for outer, inner, fit, test in nested_folds(frame, outer_too)
                         for key, mdape in fit_score(fit, test, trees).items()])
