"""What schedulers import: `Estimator.load(model_dir)` then fast per-call estimates.

A models dir holds one sub-folder per predictor kind (`output_length/`, `kernel_latency/`,
`interference/`, `moe_congestion/`, `operator_latency/`, `step_time/`), each written by that
predictor's `save`; a single predictor's folder works too. Each registered kind
(`predictors.registry.KINDS`) has a light runtime following the `registry.Runtime` protocol,
imported on first use. Nothing on the single-call path imports DuckDB, polars, Lightning or
LightGBM; the `*_batch` forms take and give frames (polars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servecast.errors import ModelVersionError, ServecastError, UnknownNameError
from servecast.predictors.registry import KINDS, get


def __getattr__(name: str):
    # LengthEstimate(p50, p90, p99, mean), re-exported lazily (numpy only)
    if name == "LengthEstimate":
        from servecast.predictors.output_length.runtime import LengthEstimate

        return LengthEstimate
    raise AttributeError(name)


class Estimator:
    """Loaded predictors by kind; a method raises UnknownNameError if its kind is absent."""

    def __init__(self, parts: dict[str, Path]):
        self._paths = parts
        self._runtimes: dict[str, Any] = {}

    @classmethod
    def load(cls, model_dir: str | Path) -> Estimator:
        """Find the predictors saved under `model_dir` (loaded lazily, on first call).

        Raises ModelVersionError naming the file for a missing dir, a dir without models or a
        model card that is not a JSON object with a string `kind` and the integer `format`
        this version reads (checked here, before any runtime loads)."""
        root = Path(model_dir)
        if not root.is_dir():
            raise ModelVersionError(f"{root}: no such models dir; train one with `servecast train`")
        from servecast.predictors.base import check_format, read_json

        parts: dict[str, Path] = {}
        for card in [root / "model_card.json", *sorted(root.glob("*/model_card.json"))]:
            if card.is_file():
                data = read_json(card, {"kind": str})
                if data["kind"] in KINDS:
                    check_format(data, card)
                    parts[data["kind"]] = card.parent
        if not parts:
            raise ModelVersionError(
                f"{root}: no servecast models inside (expected sub-folders {', '.join(KINDS)} "
                "each with a model_card.json)")
        return cls(parts)

    @property
    def kinds(self) -> list[str]:
        """Predictor kinds available in this models dir."""
        return sorted(self._paths)

    def runtime(self, kind: str) -> Any:
        """The loaded runtime of `kind` (loads it on first use).

        A saved file that does not hold what the runtime expects (a key or value of another
        type deep inside a state file) raises ModelVersionError naming the model dir, never a
        raw KeyError/TypeError; weights are read with torch's weights_only=True."""
        if kind not in self._runtimes:
            if kind not in self._paths:
                raise UnknownNameError(
                    f"no {kind} model in this models dir (has: {', '.join(self.kinds)}); "
                    f"train one with `servecast train {kind.replace('_', '-')}`")
            path = self._paths[kind]
            try:
                self._runtimes[kind] = get(kind).runtime().load(path)
            except ServecastError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                raise ModelVersionError(
                    f"{path}: the saved {kind} model is malformed ({type(e).__name__}: {e}); "
                    f"retrain it with `servecast train {kind.replace('_', '-')}`") from None
        return self._runtimes[kind]

    def predict(self, kind: str, frame) -> dict:
        """The Runtime protocol's batch form: columns equal to the `kind` predictor's
        `predict(frame)` (name -> array)."""
        return self.runtime(kind).predict(frame)

    # -- output length (tokens) -----------------------------------------------------------
    def output_length(self, prompt_tokens: int, model: str | None = None,
                      log_type: str | None = None, prompt_text: str | None = None,
                      session_id: str | None = None, arrival_s: float | None = None,
                      request_id: str | None = None):
        """Output-length quantiles in tokens -> LengthEstimate(p50, p90, p99, mean).

        `arrival_s`: the request's arrival (seconds, same clock as `observe_output`);
        `request_id`: the id `observe_output` will report the completion under (without one,
        the completion is matched by session and prompt tokens)."""
        return self.runtime("output_length").output_length(
            prompt_tokens, model=model, log_type=log_type, prompt_text=prompt_text,
            session_id=session_id, arrival_s=arrival_s, request_id=request_id)

    def reads_text(self) -> bool:
        """Whether the output-length model reads `prompt_text` (a text model); the others
        ignore it."""
        return self.runtime("output_length").card.get("model_class") == "text"

    def observe_output(self, session_id: str | None, prompt_tokens: float,
                       output_tokens: float, arrival_s: float | None = None,
                       request_id: str | None = None) -> bool:
        """Record a completed request (tokens; arrival in seconds) for later estimates: its
        session's context, the prompt-length history and the online calibration (the
        estimate `output_length` served for it, matched by `request_id`, else by session and
        prompt tokens, is scored against `output_tokens`: conformal window, adaptive levels
        and the learned level, calibration.py). Returns whether the calibration learned from
        it (False: no pending estimate; the last 10,000 single estimates are kept). Same
        arguments, same order, as the runtime's `observe`."""
        return self.runtime("output_length").observe(session_id, prompt_tokens, output_tokens,
                                                     arrival_s, request_id)

    def output_calibration(self) -> dict:
        """The output-length calibration now: `scale` (the learned level: multiplier of
        1 + tokens), `observed` (completions learned from), `levels` (the adapted p90 / p99
        target levels)."""
        c = self.runtime("output_length").calibrator
        return {"scale": float(c.scale), "observed": int(c.observed),
                "levels": [float(v) for v in c.levels[1:]]}

    def output_length_batch(self, frame):
        """Batch form: frame of llm_requests columns -> frame[p50, p90, p99, mean] (tokens)."""
        return self.runtime("output_length").output_length_batch(frame)

    # -- kernel latency (ms) ---------------------------------------------------------------
    def kernel_latency(self, op: str, shape, device_spec: dict) -> float:
        """Latency in ms of `op` with `shape` on the device described by `device_spec`."""
        return self.runtime("kernel_latency").kernel_latency(op, shape, device_spec)

    def kernel_latency_batch(self, frame, devices: dict):
        """Batch form: frame[op, device, shape columns] -> latency_ms array."""
        return self.runtime("kernel_latency").kernel_latency_batch(frame, devices)

    # -- LLM operators and engine iterations (ms) -------------------------------------------
    def operator_latency(self, op: str, gpu, dtype: str = "bf16", kv_dtype: str = "bf16",
                         **shape) -> float:
        """ms of one LLM operator (gemm, attn_prefill, attn_decode, allreduce) of `shape`
        (M, N, K, B, H, kv_heads, head_dim, tp) on `gpu` (catalog name or spec file)."""
        return self.runtime("operator_latency").operator_latency(op, gpu, dtype, kv_dtype,
                                                                 **shape)

    def step_time(self, model, gpu, prefill=(), prefill_offsets=None, decode=(), tp: int = 1,
                  dtype: str = "bf16", overhead_ms: float | None = None) -> float:
        """ms of one engine iteration of `model` (shipped name or config.json) on `gpu`
        (catalog name or spec file): `prefill` chunk lengths at `prefill_offsets`, `decode`
        context lengths; `overhead_ms` None: the saved model's engine overhead."""
        return self.runtime("step_time").step_time(model, gpu, prefill, prefill_offsets, decode,
                                                   tp, dtype, overhead_ms)

    # -- interference (perf in (0, 1]) -----------------------------------------------------
    def interference(self, metrics_window) -> float:
        """Predicted normalized performance (1 = no degradation) of one metrics window."""
        return self.runtime("interference").interference(metrics_window)

    def interference_batch(self, metrics):
        """Batch form: long frame [window_id, t, metric, value] -> frame[window_id, perf]."""
        import polars as pl

        return pl.DataFrame(self.runtime("interference").predict(metrics))

    # -- MoE congestion (gamma_eff) --------------------------------------------------------
    def moe_congestion(self, loads, quality, types=None, layer=None) -> float:
        """Effective congestion coefficient gamma_eff from expert loads and quality; `types`
        (B, K) type shares when quality is per type, `layer` the fitted layer whose beta
        applies (None: the median over layers)."""
        return self.runtime("moe_congestion").moe_congestion(loads, quality, types=types,
                                                             layer=layer)

    def moe_congestion_batch(self, items):
        """Batch form: list of (loads, quality) -> list of gamma_eff."""
        return self.runtime("moe_congestion").moe_congestion_batch(items)
