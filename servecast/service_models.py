"""Request and response bodies of the HTTP estimate service (`servecast.service`).

Every estimate endpoint takes either one request object or a batch `{"items": [...]}` of up
to `MAX_BATCH` of them (told apart by the `items` key) and answers in the same form.
Units: tokens (output length), ms (kernel latency), perf in (0, 1] (interference; 1 = no
degradation), gamma_eff in utility per unit of load share (MoE congestion).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

#: most requests in one batch body
MAX_BATCH = 10_000

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Body(BaseModel):
    """Strict request object: unknown fields are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- output length --------------------------------------------------------------------------
class OutputLengthRequest(Body):
    """One request whose response length (tokens) is wanted."""

    prompt_tokens: int = Field(ge=0, le=100_000_000, description="prompt length in tokens")
    model: Name | None = Field(None, description="serving model, e.g. ChatGPT (as in the trace)")
    log_type: Name | None = Field(None, description="e.g. 'Conversation log', 'API log'")
    prompt_text: str | None = Field(None, max_length=1_000_000,
                                    description="prompt text (text model only)")
    session_id: Name | None = Field(None, description="conversation id (session features)")


class OutputLengthEstimate(BaseModel):
    """Output-length quantiles and mean, in tokens."""

    p50: float
    p90: float
    p99: float
    mean: float


# -- kernel latency -------------------------------------------------------------------------
class DeviceSpec(BaseModel):
    """A GPU spec sheet with NeuSight's device-config keys (extra keys are ignored).

    Units: Dev_Mem GB, Mem_Bw GB/s, Freq MHz, SingleFLOPs GFLOP/s (fp32), L2Cache MB;
    optional TensorFLOPs GFLOP/s (dense fp16 tensor-core peak; default 16 x SingleFLOPs).
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    Dev_Mem: float = Field(gt=0)
    Mem_Bw: float = Field(gt=0)
    Num_Sm: float = Field(gt=0)
    Core_Per_SM: float = Field(gt=0)
    Freq: float = Field(gt=0)
    SingleFLOPs: float = Field(gt=0)
    L2Cache: float = Field(gt=0)
    TensorFLOPs: float | None = Field(
        None, gt=0, description="dense fp16 tensor-core GFLOP/s from the data sheet; fp16 "
        "GEMMs only; default 16 x SingleFLOPs (right for A100/H100, 4x high for A40/L4)")


class KernelLatencyRequest(Body):
    """One kernel: op, its shape and the device it runs on."""

    op: Name = Field(description="e.g. bmm, linear, softmax, layernorm, gelu")
    shape: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | dict[
        str, Annotated[float, Field(ge=0, allow_inf_nan=False)]
    ] = Field(description="dims in the op's order (bmm: B,M,N,K) or a mapping of them")
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
    overhead_ms: NonNeg = Field(0.0, description="engine CPU time per iteration (ms)")


class StepTimeEstimate(BaseModel):
    """Iteration time (ms) and the KV capacity (tokens) of the configuration."""

    step_ms: float
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
        Name, Annotated[list[Finite], Field(min_length=1, max_length=100_000)]] = Field(
        min_length=1, max_length=100_000)


class InterferenceEstimate(BaseModel):
    """Predicted normalized performance in (0, 1]; 1 = no degradation."""

    perf: float


# -- MoE congestion -------------------------------------------------------------------------
class MoeCongestionRequest(Body):
    """Expert loads and qualities of one layer: loads (E,) or (batches, E) token counts or
    shares; quality (E,), (batches, E) or (batches, types, E)."""

    loads: list[NonNeg] | list[list[NonNeg]] = Field(min_length=1)
    quality: list[Finite] | list[list[Finite]] | list[list[list[Finite]]] = Field(min_length=1)
    types: list[list[NonNeg]] | None = Field(
        None, description="token-type shares (batches, types) when quality has types")
    layer: Annotated[str, Field(max_length=50)] | int | None = Field(
        None, description="fitted layer whose beta to use (default: median over layers)")


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
