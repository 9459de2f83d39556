"""HTTP estimate service: the `Estimator` behind FastAPI (`servecast serve --models DIR`).

    POST /v1/output-length    tokens: {p50, p90, p99, mean}
    POST /v1/output-length/observe  report a completed request (session context, online
                              calibration): {recorded, calibrated, scale, observed}
    POST /v1/kernel-latency   {latency_ms}
    POST /v1/interference     {perf} in (0, 1]
    POST /v1/moe-congestion   {gamma_eff}
    POST /v1/step-time        {step_ms, breakdown, kv_capacity_tokens}
    GET  /healthz             loaded kinds
    GET  /openapi.json, /docs (Swagger UI), /redoc: the schema; UI assets served locally

Each POST takes one request object or `{"items": [...]}` (see `servecast.service.models`).
Answers: 200; 422 `{"message", "detail"}` for a bad body (the message names the field), an
input the predictor refuses (unknown model name, op, ...), values it cannot compute from
(overflow, domain error) or an estimate outside its kind's plausible range (`Endpoint.bounds`;
non-finite included); 404 when the models dir has no model of that kind; 413 for a body over
`MAX_BODY_BYTES`. Models load once, in `create_app`; handlers are plain synchronous calls.
`servecast serve` runs it on uvicorn with bounded connections and read/idle timeouts
(`servecast.service.limits`).
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' body types at runtime
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from servecast.errors import InvalidInputError, ServecastError
from servecast.estimator import Estimator
from servecast.service.limits import MAX_BODY_BYTES, BodyLimit
from servecast.service.models import (
    BatchResult,
    CompletedRequest,
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
    Recorded,
    StepTimeEstimate,
    StepTimeRequest,
    single_or_batch,
)

ERRORS = {
    404: {"model": ErrorBody, "description": "no model of this kind in the models dir"},
    413: {"model": ErrorBody, "description": f"body over {MAX_BODY_BYTES} bytes"},
    422: {"model": ErrorBody, "description": "invalid body, input refused by the predictor, "
          "or no plausible finite estimate from these values"},
}
log = logging.getLogger("servecast.service")
#: response header listing request fields the loaded model ignored (comma separated)
IGNORED_HEADER = "X-Servecast-Ignored"


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


def _with_ignored(est: Estimator, r: OutputLengthRequest, out: dict) -> dict:
    """`out` plus `ignored: ["prompt_text"]` when `r` has a text the model does not read."""
    if r.prompt_text is not None and not est.reads_text():
        out["ignored"] = ["prompt_text"]
    return out


def _length_one(est: Estimator, r: OutputLengthRequest) -> dict:
    return _with_ignored(est, r, _quantiles(est.output_length(
        r.prompt_tokens, model=r.model, log_type=r.log_type, prompt_text=r.prompt_text,
        session_id=r.session_id, request_id=r.request_id)))


def _length_many(est: Estimator, items: Sequence[OutputLengthRequest]) -> list[dict]:
    import polars as pl

    cols: dict[str, pl.Series] = {
        "prompt_tokens": pl.Series([r.prompt_tokens for r in items], dtype=pl.Int64)}
    for c in _OPTIONAL_COLS:
        values = [getattr(r, c) for r in items]
        if any(v is not None for v in values):
            cols[c] = pl.Series(values, dtype=pl.String)
    out = est.output_length_batch(pl.DataFrame(cols))
    rows = out.select([pl.col(k).cast(pl.Float64) for k in _LENGTH_FIELDS]).to_dicts()
    return [_with_ignored(est, r, row) for r, row in zip(items, rows, strict=True)]


def _observe_one(est: Estimator, r: CompletedRequest) -> dict:
    calibrated = est.observe_output(r.session_id, r.prompt_tokens, r.output_tokens,
                                    arrival_s=r.arrival_s, request_id=r.request_id)
    state = est.output_calibration()
    return {"recorded": True, "calibrated": calibrated, "scale": state["scale"],
            "observed": state["observed"]}


def _kernel_one(est: Estimator, r: KernelLatencyRequest) -> dict:
    return {"latency_ms": float(est.kernel_latency(r.op, r.shape, r.device_spec.model_dump()))}


def _step_one(est: Estimator, r: StepTimeRequest) -> dict:
    engine = est.runtime("step_time").engine(r.model, r.gpu, r.tp, r.dtype, r.overhead_ms)
    parts = engine.breakdown(r.prefill, r.prefill_offsets, r.decode)
    return {"step_ms": sum(parts.values()), "breakdown": parts,
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
    return {"gamma_eff": float(est.moe_congestion(r.loads, r.quality, types=r.types,
                                                  layer=r.layer))}


@dataclass(frozen=True)
class Endpoint:
    """One estimate route: its kind, bodies and the Estimator calls behind it.

    `many` is the vectorized batch call (None: `one` per item). `inputs` names the request
    field(s) blamed when the values cannot be computed from or give an estimate outside
    `bounds` (inclusive; in the response's unit), which a plausible estimate never leaves.
    """

    kind: str
    path: str
    request: type
    response: type
    one: Callable[[Estimator, Any], dict]
    many: Callable[[Estimator, Sequence], list[dict]] | None
    summary: str
    inputs: str
    bounds: tuple[float, float]

    def compute(self, est: Estimator, body: Any) -> dict:
        """The response dict of one request or a Batch; InvalidInputError (naming the item
        and field) for values that overflow, leave the math domain or give an implausible
        estimate."""
        if isinstance(body, self.request):
            return self._checked(self._guard(self.one, est, body, where=""), "")
        items = body.items
        if self.many is not None:
            outs = self._guard(self.many, est, items, where="items: ")
        else:
            outs = [self._guard(self.one, est, r, where=f"items[{i}].")
                    for i, r in enumerate(items)]
        return {"items": [self._checked(o, f"items[{i}].") for i, o in enumerate(outs)]}

    def _guard(self, fn: Callable, est: Estimator, arg: Any, where: str) -> Any:
        try:
            return fn(est, arg)
        except ServecastError:
            raise
        except (ArithmeticError, ValueError) as e:  # overflow, math domain, inf -> int, ...
            raise InvalidInputError(
                f"{where}{self.inputs}: no estimate can be computed from these values "
                f"({type(e).__name__}: {e}); use values in the ranges /docs gives") from None

    def _checked(self, out: dict, where: str) -> dict:
        lo, hi = self.bounds
        for key, value in out.items():
            if isinstance(value, dict):  # parts of the estimate (a breakdown): each checked
                self._checked(value, f"{where}{key}.")
            elif key != "ignored" and not (lo <= value <= hi):  # NaN fails too
                raise InvalidInputError(
                    f"{where}{self.inputs}: the estimate {key} = {value:.4g} is outside "
                    f"[{lo:g}, {hi:g}], the plausible range of a {self.kind} estimate; these "
                    "values are outside what the model covers")
        return out


ENDPOINTS = [
    Endpoint("output_length", "/v1/output-length", OutputLengthRequest, OutputLengthEstimate,
             _length_one, _length_many, "Output-length quantiles (tokens) of LLM requests",
             "prompt_tokens", (0.0, 1e9)),
    Endpoint("output_length", "/v1/output-length/observe", CompletedRequest, Recorded,
             _observe_one, None,
             "Record completed requests: later estimates of their sessions see them, and the "
             "online calibration learns from the estimate served under their request_id",
             "output_tokens", (0.0, 1e9)),  # flags, the learned scale, a count
    Endpoint("kernel_latency", "/v1/kernel-latency", KernelLatencyRequest, KernelLatencyEstimate,
             _kernel_one, None, "GPU kernel latency (ms) from op, shape and spec",
             "shape", (0.0, 1e8)),
    Endpoint("interference", "/v1/interference", InterferenceRequest, InterferenceEstimate,
             _interference_one, _interference_many,
             "Normalized performance (0, 1] of a VM from a window of metrics", "metrics",
             (0.0, 10.0)),
    Endpoint("moe_congestion", "/v1/moe-congestion", MoeCongestionRequest, MoeCongestionEstimate,
             _moe_one, None, "MoE congestion coefficient gamma_eff of one layer",
             "loads", (-1e12, 1e12)),
    Endpoint("step_time", "/v1/step-time", StepTimeRequest, StepTimeEstimate, _step_one,
             None, "Engine iteration time (ms) of a batch on a GPU from its spec", "decode",
             (0.0, 1e12)),
]


# -- errors ---------------------------------------------------------------------------------
def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"message": message, "detail": detail}, status_code=status)


#: pydantic's names of union branches in error locations (not fields)
_BRANCHES = {"body", "single", "batch", "str", "int", "float", "bool", "none"}


def _field(loc: Sequence) -> str:
    """'items[3].prompt_tokens' from a pydantic error location (body/tag parts dropped)."""
    out = ""
    for part in loc:
        if part in _BRANCHES or (isinstance(part, str) and (
                "[" in part or part.startswith("constrained-"))):
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
            out = ep.compute(est, body)
        except ServecastError as e:
            return _error(422, str(e))
        ignored = sorted({f for o in out.get("items", [out]) for f in o.get("ignored", ())})
        if not ignored:
            return FastJSON(out)
        _log_ignored(app, ignored)
        return FastJSON(out, headers={IGNORED_HEADER: ",".join(ignored)})

    handler.__annotations__ = {"body": body_type, "return": Any}
    handler.__name__ = ep.kind
    handler.__doc__ = f"{ep.summary}. One request object or a batch `{{\"items\": [...]}}`."
    app.post(ep.path, summary=ep.summary, responses=ERRORS,
             response_model=ep.response | BatchResult[ep.response])(handler)


def _log_ignored(app: FastAPI, fields: list[str]) -> None:
    """Warn that request fields were ignored (the 1st, 10th, 100th, ... time: bounded log)."""
    app.state.ignored += 1
    if math.log10(app.state.ignored).is_integer():
        log.warning("ignored %s: the loaded model does not read it (%d request(s) so far; "
                    "responses say so in `ignored` and the %s header)", ", ".join(fields),
                    app.state.ignored, IGNORED_HEADER)


def _docs_routes(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their JS/CSS served from this process (the
    `fastapi-offline` package's copies), so the docs render without network access."""
    from importlib.resources import files

    from fastapi.openapi.docs import (
        get_redoc_html,
        get_swagger_ui_html,
        get_swagger_ui_oauth2_redirect_html,
    )
    from fastapi.staticfiles import StaticFiles

    static = "/static/docs"
    app.mount(static, StaticFiles(directory=str(files("fastapi_offline") / "static")),
              name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - docs",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{static}/redoc.standalone.js",
                              redoc_favicon_url=f"{static}/favicon.png",
                              with_google_fonts=False)


def create_app(models_dir: str | Path, preload: bool = True) -> FastAPI:
    """The FastAPI app serving the models under `models_dir` (loaded now when `preload`).

    Raises ServecastError when the dir holds no servecast model or one fails to load.
    """
    est = Estimator.load(models_dir)
    if preload:
        for kind in est.kinds:
            est.runtime(kind)
    app = FastAPI(title="servecast estimates", version=_version(),
                  description=__doc__.split("\n\n")[0], docs_url=None, redoc_url=None)
    app.state.estimator, app.state.ignored = est, 0
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    _docs_routes(app)

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
