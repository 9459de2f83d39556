"""Shared part of the inner leave-one-GPU-out loops (`gemm_inner_logo.py`,
`attention_inner_logo.py`): the sampled operator frame, physics-constant overrides from the
command line, residual settings (`--residual`, `predictor.RESIDUALS`), the nested folds and
the shape-lookup diagnostic (`lookup_scores`). Inner scores never read the outer (held-out)
GPU: they are what physics constants and residual settings are chosen by.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
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


#: `--residual` settings of one residual key (`predictor.RESIDUALS`) and their value types
#: (bool and float ones lie in [0, 1], int ones are positive)
RESIDUAL_NAMES = {"shape_features": bool, "shape_weight": float, "shape_cross": bool,
                  "shape_fine": bool, "gemm_cross": bool, "mlp_weight": float,
                  "mlp_shape": bool, "mlp_hidden": int, "mlp_clip": bool, "scale": float}
#: weights of the shape lookup beside the trees (`lookup_scores`)
LOOKUP_WEIGHTS = (0.25, 0.5, 0.75)


#: LightGBM parameters `--param` may set and their value types (objective: a name)
FOREST_PARAMS = {"num_leaves": int, "min_data_in_leaf": int, "learning_rate": float,
                 "num_iterations": int, "feature_fraction": float, "lambda_l2": float,
                 "objective": str}


def add_residual_args(ap) -> None:
    """The residual flags both inner loops take: `--residual`, `--param`, `--model-seed`,
    `--lookup`."""
    ap.add_argument("--residual", nargs="*", default=[], metavar="KEY.NAME=VALUE",
                    help="a residual setting of one key (predictor.RESIDUALS), e.g. "
                         "gemm/fp8.shape_weight=0.5; `none` first clears the shipped ones")
    ap.add_argument("--param", "--params", dest="params", nargs="*", default=[],
                    metavar="KEY.NAME=VALUE",
                    help="a LightGBM parameter of one key's residual (predictor.OP_PARAMS), "
                         "e.g. gemm/bf16.num_leaves=31 or attn_decode.objective=l2")
    ap.add_argument("--model-seed", type=int, default=0,
                    help="LightGBM and row-draw seed of the residual fits")
    ap.add_argument("--lookup", action="store_true",
                    help="print the shape-lookup diagnostic beside the trees instead")


def key_setting(flag: str, pair: str, names, example: str) -> tuple[str, str, float]:
    """(key, NAME, VALUE) of one KEY.NAME=VALUE pair given to `flag`; exit 2 naming the
    pair and the fix (`example`) when NAME is not one of `names` or VALUE not a number."""
    key, _eq, value = pair.partition("=")
    op, _dot, name = key.rpartition(".")
    if not op or name not in names:
        fail(f"{flag} {pair}: expected KEY.NAME=VALUE with NAME one of "
             f"{', '.join(names)}, e.g. {example}")
    try:
        return op, name, float(value)
    except ValueError:
        fail(f"{flag} {pair}: {value!r} is not a number")


def forest_params(pairs: list[str]) -> dict[str, dict]:
    """Apply `--param` KEY.NAME=VALUE LightGBM settings to `predictor.OP_PARAMS` (VALUE a
    LightGBM objective's name for `objective`); exit 2 naming the pair and the fix on an
    unknown name, a value that is not a positive number (a positive integer for the
    integer ones), or a setting that reaches none of the key's forests under the
    `RESIDUALS` in force (apply `residual_settings` first). Returns the settings in force."""
    from servecast.predictors.operator_latency import physics
    from servecast.predictors.operator_latency.predictor import OP_PARAMS
    from servecast.predictors.operator_latency.runtime import forest_key

    example = "gemm/bf16.num_leaves=31"
    keys = sorted({forest_key(op, d) for op in physics.OPS for d in ("bf16", "fp8")})
    for pair in pairs:
        key, _eq, value = pair.partition("=")
        op, _dot, param = key.rpartition(".")
        if op and op not in keys:
            fail(f"--param {pair}: {op!r} is not a residual key; expected KEY.NAME=VALUE "
                 f"with KEY one of {', '.join(keys)}, e.g. {example}")
        if op and param == "objective":
            _reaches_a_forest(pair, op, param)
            OP_PARAMS.setdefault(op, {})[param] = value
            continue
        op, param, number = key_setting("--param", pair, FOREST_PARAMS, example)
        kind = FOREST_PARAMS[param]
        if number <= 0 or (kind is int and not number.is_integer()):
            fail(f"--param {pair}: {param} must be a positive {kind.__name__}")
        _reaches_a_forest(pair, op, param)
        OP_PARAMS.setdefault(op, {})[param] = kind(number)
    return {k: dict(v) for k, v in OP_PARAMS.items()}


def _reaches_a_forest(pair: str, key: str, param: str) -> None:
    """Exit 2 when LightGBM setting `param` of residual key `key` would change no fit: the
    key has no view forest (`shape_weight` 1) and its shape view takes `param` from
    `FINE_SHAPE_PARAMS` (`shape_fine`), which override `OP_PARAMS`."""
    from servecast.predictors.operator_latency.predictor import FINE_SHAPE_PARAMS, RESIDUALS

    cfg = RESIDUALS.get(key, {})
    weight = float(cfg.get("shape_weight", 0.0))
    fine = bool(cfg.get("shape_fine")) and param in FINE_SHAPE_PARAMS
    if weight >= 1 and fine:
        fail(f"--param {pair}: {key}'s residual is its shape view alone (shape_weight 1), "
             f"fitted with FINE_SHAPE_PARAMS' {param}, so this setting changes nothing; "
             f"add --residual {key}.shape_weight=0.75 (a view forest) or "
             f"{key}.shape_fine=0")


def residual_settings(pairs: list[str]) -> dict[str, dict]:
    """Apply KEY.NAME=VALUE settings to `predictor.RESIDUALS` (a leading `none` clears
    them: every op on the view's columns alone); exit 2 naming the pair and the fix on an
    unknown name or a bad value. Returns the settings in force."""
    from servecast.predictors.operator_latency.predictor import RESIDUALS

    if pairs[:1] == ["none"]:
        RESIDUALS.clear()
        pairs = pairs[1:]
    for pair in pairs:
        op, name, number = key_setting("--residual", pair, RESIDUAL_NAMES,
                                       "attn_decode.shape_weight=0.75")
        kind = RESIDUAL_NAMES[name]
        if kind is int and (number < 1 or not number.is_integer()):
            fail(f"--residual {pair}: {name} must be a positive int")
        if kind is not int and not 0.0 <= number <= 1.0:
            fail(f"--residual {pair}: {name} must lie in [0, 1]")
        RESIDUALS.setdefault(op, {})[name] = kind(number)
    return {k: dict(v) for k, v in RESIDUALS.items()}


def fit_score(train: pl.DataFrame, test: pl.DataFrame, trees: int,
              seed: int = 0) -> dict[str, float]:
    """MdAPE (%) per residual key (`runtime.forest_key`: op, and dtype for GEMMs) on `test`
    of the operator model (relative view, `trees` trees, `seed`) fitted on `train`. Prints
    each MLP member's epoch choice (made on the fit rows; model card `mlp`)."""
    from servecast.predictors.operator_latency.predictor import OperatorLatencyModel

    model = OperatorLatencyModel(view="relative", trees=trees, seed=seed).fit(train)
    fitted_on = ", ".join(sorted(set(train["device"].to_list())))
    for key, fit in model.card["mlp"].items():
        print(f"mlp {key} on {fitted_on}: epoch {fit['epoch']} of {fit['epochs']}, "
              f"val L1 {fit['val_l1']:.4f}", flush=True)
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


def nested_scores(frame: pl.DataFrame, trees: int, outer_too: bool = False,
                  seed: int = 0) -> pl.DataFrame:
    """(outer, inner, key, mdape) of every fold of `nested_folds`."""
    return pl.DataFrame([{"outer": outer, "inner": inner, "key": key, "mdape": mdape}
                         for outer, inner, fit, test in nested_folds(frame, outer_too)
                         for key, mdape in fit_score(fit, test, trees, seed).items()])


def lookup_scores(frame: pl.DataFrame, trees: int, seed: int = 0) -> pl.DataFrame:
    """The shape-transfer diagnostic on every inner fold of `nested_folds`: per residual
    key, the MdAPE (%) of the trees (the model as `RESIDUALS` sets it), of the residual
    looked up as the mean / median over the fitting GPUs' log(measured / physics) at the
    same op, dtype and shape (the trees' where no fitting GPU has that shape) and of the
    mean lookup averaged with the trees at each of `LOOKUP_WEIGHTS`; `match`: the share
    (%) of scored rows whose shape a fitting GPU measured. Columns outer, inner, key,
    method, mdape, match."""
    from servecast.predictors.metrics import mdape
    from servecast.predictors.operator_latency.data import KEY
    from servecast.predictors.operator_latency.predictor import OperatorLatencyModel

    shape = [k for k in KEY if k != "device"]
    rows = []
    for outer, inner, fit, test in nested_folds(frame):
        model = OperatorLatencyModel(view="relative", trees=trees, seed=seed).fit(fit)
        ratio = (pl.col("latency_ms") / pl.col("physics_ms")).log()
        table = model.predict(fit).group_by(shape).agg(mean=ratio.mean(), median=ratio.median())
        out = model.predict(test).with_columns(
            key=pl.Series(model._keys(test)), trees=(pl.col("latency_ms_pred")
                                                      / pl.col("physics_ms")).log(),
            true=ratio).join(table, on=shape, how="left", maintain_order="left")
        for (key,), part in out.group_by("key", maintain_order=True):
            trees_r, true = part["trees"].to_numpy(), part["true"].to_numpy()
            found = part["mean"].is_not_null().to_numpy()
            est = {"trees": trees_r}
            for col in ("mean", "median"):
                est[f"lookup {col}"] = np.where(found, part[col].fill_null(0.0).to_numpy(),
                                                trees_r)
            for w in LOOKUP_WEIGHTS:
                est[f"lookup x {w:g}"] = w * est["lookup mean"] + (1.0 - w) * trees_r
            rows += [{"outer": outer, "inner": inner, "key": key, "method": name,
                      "mdape": mdape(np.exp(r), np.exp(true)),
                      "match": float(found.mean() * 100.0)} for name, r in est.items()]
    return pl.DataFrame(rows)


def print_lookup(frame: pl.DataFrame, trees: int, seed: int = 0) -> None:
    """Print `lookup_scores` per key: the inner sum (over outer folds, of the mean over
    each fold's training GPUs) of every method and the rows matched."""
    scores = lookup_scores(frame, trees, seed)
    table = scores.group_by("key", "method", "outer", maintain_order=True).agg(
        pl.col("mdape").mean(), pl.col("match").mean()).group_by(
        "key", "method", maintain_order=True).agg(
        inner_sum=pl.col("mdape").sum(), matched_pct=pl.col("match").mean())
    with pl.Config(tbl_rows=100, float_precision=1):
        print(table.sort("key", "inner_sum"))
