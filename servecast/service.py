"""HTTP estimate service: the `Estimator` behind FastAPI (`servecast serve --models DIR`).

    POST /v1/output-length    tokens: {p50, p90, p99, mean}
    POST /v1/kernel-latency   {latency_ms}
    POST /v1/interference     {perf} in (0, 1]
    POST /v1/moe-congestion   {gamma_eff}
    POST /v1/step-time        {step_ms, kv_capacity_tokens}
    GET  /healthz             loaded kinds;  GET /openapi.json, /docs: the schema

Each POST takes one request object or `{"items": [...]}` (see `servecast.service_models`).
Answers: 200; 422 `{"message", "detail"}` for a bad body (the message names the field) or an
input the predictor refuses (unknown model name, op, ...); 404 when the models dir has no
model of that kind. Models load once, in `create_app`; handlers are plain synchronous calls.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' body types at runtime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from servecast.errors import InvalidInputError, ServecastError
from servecast.estimator import Estimator
from servecast.service_models import (
    BatchResult,
    ErrorBody,
    Health,
    InterferenceEstimate,
    InterferenceRequest,
    KernelLatencyEstimate,
    KernelLatencyRequest,
    MoeCongestionEstimate,
    MoeCongestionRequest,
    OutputLengthEstimate,
    OutputLengthRequest,
    StepTimeEstimate,
    StepTimeRequest,
    single_or_batch,
)

ERRORS = {
    404: {"model": ErrorBody, "description": "no model of this kind in the models dir"},
    422: {"model": ErrorBody, "description": "invalid body or input refused by the predictor"},
}


class FastJSON(Response):
    """Compact JSON response (no NaN: a non-finite estimate is a server bug, not output)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


# -- per-kind adapters: request objects -> Estimator calls -> plain dicts --------------------
_LENGTH_FIELDS = ("p50", "p90", "p99", "mean")
_OPTIONAL_COLS = ("model", "log_type", "prompt_text", "session_id")


def _quantiles(obj: Any) -> dict[str, float]:
    get = obj.__getitem__ if isinstance(obj, dict) else obj.__getattribute__
    return {k: float(get(k)) for k in _LENGTH_FIELDS}


def _length_one(est: Estimator, r: OutputLengthRequest) -> dict:
    return _quantiles(est.output_length(
        r.prompt_tokens, model=r.model, log_type=r.log_type, prompt_text=r.prompt_text,
        session_id=r.session_id))


def _length_many(est: Estimator, items: Sequence[OutputLengthRequest]) -> list[dict]:
    import polars as pl

    cols: dict[str, pl.Series] = {
        "prompt_tokens": pl.Series([r.prompt_tokens for r in items], dtype=pl.Int64)}
    for c in _OPTIONAL_COLS:
        values = [getattr(r, c) for r in items]
        if any(v is not None for v in values):
            cols[c] = pl.Series(values, dtype=pl.String)
    out = est.output_length_batch(pl.DataFrame(cols))
    return out.select([pl.col(k).cast(pl.Float64) for k in _LENGTH_FIELDS]).to_dicts()


def _kernel_one(est: Estimator, r: KernelLatencyRequest) -> dict:
    return {"latency_ms": float(est.kernel_latency(r.op, r.shape, r.device_spec.model_dump()))}


def _step_one(est: Estimator, r: StepTimeRequest) -> dict:
    engine = est.runtime("step_time").engine(r.model, r.gpu, r.tp, r.dtype, r.overhead_ms)
    return {"step_ms": engine.step_ms(r.prefill, r.prefill_offsets, r.decode),
            "kv_capacity_tokens": engine.kv_capacity_tokens}


def _long_rows(r: InterferenceRequest, window_id: int) -> list[tuple]:
    """(window_id, t, metric, value) rows of one window (mapping form: steps -n+1 .. 0)."""
    if isinstance(r.metrics, dict):
        return [(window_id, float(i - len(vals) + 1), name, v)
                for name, vals in r.metrics.items() for i, v in enumerate(vals)]
    return [(window_id, m.t, m.metric, m.value) for m in r.metrics]


def _long_frame(items: Sequence[InterferenceRequest]):
    import polars as pl

    rows = [row for i, r in enumerate(items) for row in _long_rows(r, i)]
    return pl.DataFrame(rows, orient="row", schema={
        "window_id": pl.Int64, "t": pl.Float64, "metric": pl.String, "value": pl.Float64})


def _interference_one(est: Estimator, r: InterferenceRequest) -> dict:
    return {"perf": float(est.interference(_long_frame([r])))}


def _interference_many(est: Estimator, items: Sequence[InterferenceRequest]) -> list[dict]:
    out = est.interference_batch(_long_frame(items))
    perf = dict(zip(out["window_id"].to_list(), out["perf"].to_list(), strict=True))
    missing = [i for i in range(len(items)) if i not in perf]
    if missing:
        raise InvalidInputError(f"items[{missing[0]}]: the model gave no estimate for this "
                                "window (no usable metric?)")
    return [{"perf": float(perf[i])} for i in range(len(items))]


def _moe_one(est: Estimator, r: MoeCongestionRequest) -> dict:
    if r.types is None and r.layer is None:
        return {"gamma_eff": float(est.moe_congestion(r.loads, r.quality))}
    runtime = est.runtime("moe_congestion")
    return {"gamma_eff": float(runtime.moe_congestion(r.loads, r.quality, types=r.types,
                                                      layer=r.layer))}


def _each(one: Callable) -> Callable:
    def many(est: Estimator, items: Sequence) -> list[dict]:
        return [one(est, r) for r in items]
    return many


@dataclass(frozen=True)
class Endpoint:
    """One estimate route: its kind, bodies and the Estimator calls behind it."""

    kind: str
    path: str
    request: type
    response: type
    one: Callable[[Estimator, Any], dict]
    many: Callable[[Estimator, Sequence], list[dict]]
    summary: str


ENDPOINTS = [
    Endpoint("output_length", "/v1/output-length", OutputLengthRequest, OutputLengthEstimate,
             _length_one, _length_many, "Output-length quantiles (tokens) of LLM requests"),
    Endpoint("kernel_latency", "/v1/kernel-latency", KernelLatencyRequest, KernelLatencyEstimate,
             _kernel_one, _each(_kernel_one), "GPU kernel latency (ms) from op, shape and spec"),
    Endpoint("interference", "/v1/interference", InterferenceRequest, InterferenceEstimate,
             _interference_one, _interference_many,
             "Normalized performance (0, 1] of a VM from a window of metrics"),
    Endpoint("moe_congestion", "/v1/moe-congestion", MoeCongestionRequest, MoeCongestionEstimate,
             _moe_one, _each(_moe_one), "MoE congestion coefficient gamma_eff of one layer"),
    Endpoint("step_time", "/v1/step-time", StepTimeRequest, StepTimeEstimate, _step_one,
             _each(_step_one), "Engine iteration time (ms) of a batch on a GPU from its spec"),
]


# -- errors ---------------------------------------------------------------------------------
def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"message": message, "detail": detail}, status_code=status)


def _field(loc: Sequence) -> str:
    """'items[3].prompt_tokens' from a pydantic error location (body/tag parts dropped)."""
    out = ""
    for part in loc:
        if part in ("body", "single", "batch") or (isinstance(part, str) and "[" in part):
            continue  # union-branch names such as list[float] are not fields
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid body"}
    message = f"{_field(first.get('loc', ()))}: {first.get('msg')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    detail = [{"field": _field(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
              for e in errors[:20]]
    return _error(422, message, detail)


# -- app ------------------------------------------------------------------------------------
def _route(app: FastAPI, est: Estimator, ep: Endpoint) -> None:
    body_type = single_or_batch(ep.request)
    available = ep.kind in est.kinds

    def handler(body: Any) -> Any:
        if not available:
            return _error(404, f"no {ep.kind} model loaded (this service has: "
                               f"{', '.join(est.kinds)}); train one with `servecast train "
                               f"{ep.kind.replace('_', '-')}` and restart with --models")
        try:
            if isinstance(body, ep.request):
                return FastJSON(ep.one(est, body))
            return FastJSON({"items": ep.many(est, body.items)})
        except (ServecastError, ValueError) as e:
            return _error(422, str(e))

    handler.__annotations__ = {"body": body_type, "return": Any}
    handler.__name__ = ep.kind
    handler.__doc__ = f"{ep.summary}. One request object or a batch `{{\"items\": [...]}}`."
    app.post(ep.path, summary=ep.summary, responses=ERRORS,
             response_model=ep.response | BatchResult[ep.response])(handler)


def create_app(models_dir: str | Path, preload: bool = True) -> FastAPI:
    """The FastAPI app serving the models under `models_dir` (loaded now when `preload`).

    Raises ServecastError when the dir holds no servecast model or one fails to load.
    """
    est = Estimator.load(models_dir)
    if preload:
        for kind in est.kinds:
            est.runtime(kind)
    app = FastAPI(title="servecast estimates", version=_version(),
                  description=__doc__.split("\n\n")[0])
    app.state.estimator = est
    app.add_exception_handler(RequestValidationError, _invalid_body)

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        """Liveness and the predictor kinds this service answers."""
        return Health(status="ok", kinds=est.kinds, models_dir=str(models_dir))

    for ep in ENDPOINTS:
        _route(app, est, ep)
    return app


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("servecast")
    except md.PackageNotFoundError:
        return "0"
