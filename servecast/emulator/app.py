"""The emulator's FastAPI app: `GET /v1/models`, `POST /v1/completions`,
`POST /v1/chat/completions` (streamed and not; see `protocol`) and `GET /healthz`.

`create_app(driver, model)`: the driver is started and stopped with the app (lifespan).
Bad bodies get OpenAI's error JSON with status 400 naming the field (422-style validation
errors included), an unknown model 404, a request no replica can hold 400
(`context_length_exceeded`): more prompt + output tokens than `max_model_len` in
/v1/models (as vLLM reports it), the KV tokens one request may hold (`Fleet.kv_tokens`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from servecast.emulator.driver import Driver
from servecast.emulator.protocol import (
    TOKEN_TEXT,
    ChatBody,
    CompletionBody,
    Reply,
    error_body,
    prompt_tokens,
)
from servecast.errors import ServecastError


def create_app(driver: Driver, model: str, default_output_tokens: int = 256,
               lengths=None) -> FastAPI:
    """The app serving `model` (its id in /v1/models) on `driver`'s simulated fleet.
    `lengths` (an Estimator with an output-length model) predicts each request's p50 / p90
    output tokens from its prompt tokens: the engine's SJF and kv_p90 policies read them,
    and a request without max_tokens generates the p50 (rounded, at least 1); without
    `lengths` such a request generates `default_output_tokens`."""

    def predicted(prompt: int) -> tuple[float, float]:
        if lengths is None:
            return float("nan"), float("nan")
        q = lengths.output_length(prompt)
        return q.p50, q.p90

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from servecast.tokens import encoder

        encoder()  # load the BPE now: a first request must not wait for it on the event loop
        await driver.start()
        yield
        await driver.stop()

    app = FastAPI(title="servecast emulator", lifespan=lifespan)
    app.state.driver = driver

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(f"request body is not valid JSON ({first.get('msg')}"
                                           f" at character {first['loc'][-1]}); send a JSON "
                                           "object"), status_code=400)
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = ".".join(loc) or None
        msg = f"{field}: {first.get('msg', 'invalid')}" if field else \
            f"request body: {first.get('msg', 'invalid')} (send a JSON object)"
        return JSONResponse(error_body(msg, field), status_code=400)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "in_flight": len(driver.streams), "finished": driver.finished}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                            "owned_by": "servecast-emulator",
                                            "root": model, "parent": None,
                                            "max_model_len": driver.fleet.kv_tokens}]}

    async def serve(body: CompletionBody | ChatBody, chat: bool):
        if body.model != model:
            return JSONResponse(error_body(f"The model `{body.model}` does not exist; this "
                                           f"emulator serves `{model}`", "model",
                                           "model_not_found"), status_code=404)
        try:
            n_prompt = prompt_tokens(body)
            p50, p90 = predicted(n_prompt)
            n_out = body.output_tokens() or (default_output_tokens if p50 != p50 else
                                             max(1, round(p50)))
            stream = driver.submit(n_prompt, n_out, p50, p90)
        except ServecastError as e:
            return JSONResponse(error_body(str(e), "messages" if chat else "prompt",
                                           "context_length_exceeded"), status_code=400)
        reply = Reply(chat, stream.request_id, model, n_prompt, n_out)
        if not body.stream:
            while await stream.tokens.get() is not None:
                pass
            return reply.whole(TOKEN_TEXT * n_out)

        async def events():
            if chat:
                yield reply.chunk(None, role=True)
            sent = 0
            while await stream.tokens.get() is not None:
                sent += 1
                yield reply.chunk(TOKEN_TEXT, "length" if sent == n_out else None)
            if body.include_usage():
                yield reply.usage_chunk()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        return await serve(body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody):
        return await serve(body, chat=True)

    return app
