"""Request and response bodies of the HTTP estimate service (`servecast.service.app`).

Every estimate endpoint takes either one request object or a batch `{"items": [...]}` of up
to `MAX_BATCH` of them (told apart by the `items` key) and answers in the same form.
Units: tokens (output length), ms (kernel latency), perf in (0, 1] (interference; 1 = no
degradation), gamma_eff in utility per unit of load share (MoE congestion).

Types are strict (JSON `true` or `"512"` is not a number; `512.0` is not an integer) and
every number and list is bounded (the constants below), so a body's cost is bounded too.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

#: most requests in one batch body
MAX_BATCH = 10_000
#: largest kernel dimension (elements; int32 indexing: no real kernel goes beyond)
MAX_DIM = 2**31
#: most metric samples in one interference window
MAX_SAMPLES = 10_000
#: most experts, routing batches and token types of one MoE layer
MAX_EXPERTS, MAX_MOE_BATCHES, MAX_TYPES = 4096, 256, 64
#: largest absolute value of a metric, quality or load
MAX_VALUE = 1e15

Finite = Annotated[float, Field(strict=True, ge=-MAX_VALUE, le=MAX_VALUE, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(strict=True, ge=0, le=MAX_VALUE, allow_inf_nan=False)]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=200)]


def _spec(lo: float, hi: float, doc: str = "") -> Any:
    """A strict spec-sheet number in [lo, hi] (in (0, hi] when lo is 0)."""
    low = {"gt": 0} if lo == 0 else {"ge": lo}
    return Field(le=hi, strict=True, allow_inf_nan=False, description=doc or None, **low)


class Body(BaseModel):
    """Strict request object: unknown fields are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# -- output length --------------------------------------------------------------------------
class OutputLengthRequest(Body):
    """One request whose response length (tokens) is wanted."""

    prompt_tokens: int = Field(ge=0, le=100_000_000, strict=True,
                               description="prompt length in tokens (a JSON integer)")
    model: Name | None = Field(None, description="serving model, e.g. ChatGPT (as in the trace)")
    log_type: Name | None = Field(None, description="e.g. 'Conversation log', 'API log'")
    prompt_text: str | None = Field(None, max_length=1_000_000,
                                    description="prompt text (read by a text model only; "
                                    "others answer with `ignored: [\"prompt_text\"]`)")
    session_id: Name | None = Field(None, description="conversation id (session features)")
    request_id: Name | None = Field(None, description="id under which the completion will be "
                                    "reported to /v1/output-length/observe (calibration)")


class CompletedRequest(Body):
    """A finished request, recorded so later estimates see it (its session's context and
    the prompt-length history)."""

    session_id: Name | None = Field(None, description="conversation id, as in the estimate")
    prompt_tokens: int = Field(ge=0, le=100_000_000, strict=True,
                               description="prompt length in tokens")
    output_tokens: int = Field(ge=0, le=100_000_000, strict=True,
                               description="response length in tokens")
    arrival_s: Finite | None = Field(None, description="arrival time (s, the clock of the "
                                                       "estimates' arrival_s)")
    request_id: Name | None = Field(None, description="the request_id of its estimate (else "
                                    "matched by session_id and prompt_tokens)")


class Recorded(BaseModel):
    """The completion was recorded; `calibrated`: its estimate was pending and the online
    calibration learned from it; `scale`: the learned level now (multiplier of 1 + tokens);
    `observed`: completions the calibration has learned from."""

    recorded: bool
    calibrated: bool = False
    scale: float = 1.0
    observed: int = 0


class OutputLengthEstimate(BaseModel):
    """Output-length quantiles and mean, in tokens; `ignored` lists request fields the
    loaded model does not read (e.g. prompt_text sent to a model without text)."""

    p50: float
    p90: float
    p99: float
    mean: float
    ignored: list[str] | None = None


# -- kernel latency -------------------------------------------------------------------------
class DeviceSpec(BaseModel):
    """A GPU spec sheet with NeuSight's device-config keys (extra keys are ignored).

    Units: Dev_Mem GB, Mem_Bw GB/s, Freq MHz, SingleFLOPs GFLOP/s (fp32), L2Cache MB;
    optional TensorFLOPs GFLOP/s (dense fp16 tensor-core peak; default 16 x SingleFLOPs).
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)
    #: extra keys (e.g. "Device": "A100") hold a short string or a finite number
    __pydantic_extra__: dict[str, Annotated[str, Field(max_length=200)] | Finite]

    Dev_Mem: float = _spec(0, 1e5, "GB")
    Mem_Bw: float = _spec(1, 1e6, "GB/s")
    Num_Sm: float = _spec(1, 1e5)
    Core_Per_SM: float = _spec(1, 1e5)
    Freq: float = _spec(1, 1e5, "MHz")
    SingleFLOPs: float = _spec(1, 1e8, "GFLOP/s")
    L2Cache: float = _spec(0, 1e5, "MB")
    TensorFLOPs: float | None = Field(
        None, ge=1, le=1e9, strict=True, allow_inf_nan=False,
        description="dense fp16 tensor-core GFLOP/s from the data sheet; fp16 "
        "GEMMs only; default 16 x SingleFLOPs (right for A100/H100, 4x high for A40/L4)")


Dim = Annotated[float, Field(strict=True, ge=0, le=MAX_DIM, allow_inf_nan=False)]


class KernelLatencyRequest(Body):
    """One kernel: op, its shape and the device it runs on."""

    op: Name = Field(description="e.g. bmm, linear, softmax, layernorm, gelu")
    shape: Annotated[list[Dim], Field(min_length=1, max_length=11)] | Annotated[
        dict[Annotated[str, Field(max_length=20)], Dim], Field(min_length=1, max_length=11)
    ] = Field(description="dims in the op's order (bmm: B,M,N,K) or a mapping of them; "
              f"each in [0, {MAX_DIM}]")
    device_spec: DeviceSpec


class KernelLatencyEstimate(BaseModel):
    """Predicted latency in milliseconds."""

    latency_ms: float


# -- step time -------------------------------------------------------------------------------
Tokens = Annotated[int, Field(ge=0, le=100_000_000)]


class StepTimeRequest(Body):
    """One engine iteration: model, GPU, parallelism and the batch's prefill / decode work."""

    model: Name = Field(description="shipped model name (servecast estimate step-time --help)")
    gpu: Name = Field(description="catalog GPU name (`servecast gpus`), e.g. h100-sxm")
    tp: int = Field(1, ge=1, le=1024, description="tensor parallelism")
    dtype: Name = Field("bf16", description="bf16 or fp8 weights / GEMMs")
    prefill: list[Annotated[int, Field(ge=1, le=100_000_000)]] = Field(
        [], max_length=100_000, description="prefill chunk lengths (tokens)")
    prefill_offsets: list[Tokens] | None = Field(
        None, max_length=100_000, description="tokens already cached before each chunk")
    decode: list[Tokens] = Field([], max_length=100_000,
                                 description="context length of each decode sequence")
    overhead_ms: NonNeg | None = Field(
        None, description="engine CPU time per iteration (ms); default: the model's fitted one")


class StepTimeEstimate(BaseModel):
    """Iteration time (ms), its parts (ms each, summing to it: `EngineStep.breakdown`) and
    the KV capacity (tokens) of the configuration."""

    step_ms: float
    breakdown: dict[str, float]
    kv_capacity_tokens: int


# -- interference ---------------------------------------------------------------------------
class MetricSample(Body):
    """One metric value at step `t` of a window (long format)."""

    t: Finite = Field(description="step or time within the window")
    metric: Name
    value: Finite


class InterferenceRequest(Body):
    """One window of black-box metrics: long format `[{t, metric, value}, ...]`, or a mapping
    metric -> values at equally spaced steps (aligned at the window's end)."""

    metrics: list[MetricSample] | dict[
        Name, Annotated[list[Finite], Field(min_length=1, max_length=MAX_SAMPLES)]] = Field(
        min_length=1, max_length=MAX_SAMPLES)


class InterferenceEstimate(BaseModel):
    """Predicted normalized performance in (0, 1]; 1 = no degradation."""

    perf: float


# -- MoE congestion -------------------------------------------------------------------------
T = TypeVar("T")
Experts = Annotated[list[T], Field(min_length=1, max_length=MAX_EXPERTS)]
Batches = Annotated[list[T], Field(min_length=1, max_length=MAX_MOE_BATCHES)]
Types = Annotated[list[T], Field(min_length=1, max_length=MAX_TYPES)]


class MoeCongestionRequest(Body):
    """Expert loads and qualities of one layer: loads (E,) or (batches, E) token counts or
    shares; quality (E,), (batches, E) or (batches, types, E)."""

    loads: Experts[NonNeg] | Batches[Experts[NonNeg]] = Field(
        description=f"at most {MAX_MOE_BATCHES} batches of at most {MAX_EXPERTS} experts")
    quality: Experts[Finite] | Batches[Experts[Finite]] | Batches[Types[Experts[Finite]]] = (
        Field(description=f"as loads, with at most {MAX_TYPES} token types"))
    types: Batches[Types[NonNeg]] | None = Field(
        None, description="token-type shares (batches, types) when quality has types")
    layer: Annotated[str, Field(max_length=50)] | Annotated[int, Field(ge=0, le=100_000)] | (
        None) = Field(None, description="fitted layer whose beta to use (default: median "
                      "over layers)")


class MoeCongestionEstimate(BaseModel):
    """Effective congestion coefficient gamma_eff (utility per unit of load share)."""

    gamma_eff: float


# -- single-or-batch ------------------------------------------------------------------------
R = TypeVar("R")


class Batch(Body, Generic[R]):
    """A batch of requests."""

    items: list[R] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResult(BaseModel, Generic[R]):
    """Estimates aligned with the batch's items."""

    items: list[R]


def _which(body: Any) -> str:
    return "batch" if isinstance(body, dict) and "items" in body else "single"


def single_or_batch(request: type[BaseModel]) -> Any:
    """The body type accepting one `request` or a `Batch` of them (by the `items` key)."""
    return Annotated[
        Annotated[request, Tag("single")] | Annotated[Batch[request], Tag("batch")],
        Discriminator(_which),
    ]


class Health(BaseModel):
    """Service status and the predictor kinds loaded."""

    status: str
    kinds: list[str]
    models_dir: str


class ErrorBody(BaseModel):
    """An error: `message` names the field or the problem; `detail` has the specifics."""

    message: str
    detail: Any = None
