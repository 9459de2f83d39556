"""OpenAI's completions and chat-completions bodies as the emulator reads and writes them.

Requests: the fields below are read, any other field (temperature, top_p, seed, ...) is
accepted and ignored, as a server that samples nothing may. `n` > 1, `best_of` > 1 and an
empty prompt are refused. Prompt tokens are counted on the request's text with
`servecast.tokens` (cl100k_base; a chat request counts its messages' text contents; a prompt
given as token ids counts its ids). Output tokens: `max_completion_tokens`, else
`max_tokens`, else the emulator's default (an output-length model's p50 or a fixed length;
`app.create_app`); the emulator has no end-of-sequence token, so
every request generates exactly that many tokens (as with vLLM's `ignore_eos`, which is
accepted). Each generated token is the text `TOKEN_TEXT`, one token for cl100k_base and for
BERT-style tokenizers alike, so a client that counts the text gets the same number.

Responses follow OpenAI's objects (`text_completion`, `chat.completion`,
`chat.completion.chunk`), `usage` filled; streams are server-sent events ending in
`data: [DONE]`, with a usage chunk when `stream_options.include_usage` is true.
Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from servecast.errors import InvalidInputError

#: the text of every generated token
TOKEN_TEXT = " the"


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    best_of: int | None = Field(None, ge=1, le=1)

    def output_tokens(self) -> int | None:
        """The requested output length (None: the emulator's default)."""
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionBody(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)


def prompt_tokens(body: CompletionBody | ChatBody) -> int:
    """The prompt's token count (see the module docstring); InvalidInputError when empty."""
    from servecast.tokens import count_text

    if isinstance(body, ChatBody):
        texts = [m.content if isinstance(m.content, str) else
                 " ".join(str(p.get("text", "")) for p in m.content or [] if isinstance(p, dict))
                 for m in body.messages]
        n, field = sum(map(count_text, texts)), "messages"
    else:
        p = body.prompt
        batch = [p] if isinstance(p, str) or not p or isinstance(p[0], int) else p
        if len(batch) > 1:
            raise InvalidInputError(f"prompt: one prompt per request (got a batch of "
                                    f"{len(batch)}); send them as separate requests")
        one = batch[0]
        n, field = count_text(one) if isinstance(one, str) else len(one), "prompt"
    if n < 1:
        raise InvalidInputError(f"{field}: the prompt has no tokens; send some text")
    return n


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class Reply:
    """The response bodies of one request: `chunk(text, finish)` (a stream event),
    `usage_chunk()`, `whole(text)` (the non-streamed body)."""

    def __init__(self, chat: bool, request_id: int, model: str, prompt: int, completion: int):
        self.chat, self.model, self.prompt, self.completion = chat, model, prompt, completion
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self.created = int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str | None, finish: str | None = None, role: bool = False) -> str:
        if self.chat:
            delta = ({"role": "assistant", "content": ""} if role else
                     {} if text is None else {"content": text})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            body = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            body = {**self._head("text_completion"), "choices": [choice]}
        return sse(body)

    def usage_chunk(self) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({**self._head(obj), "choices": [],
                    "usage": usage(self.prompt, self.completion)})

    def whole(self, text: str) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": "length"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
            obj = "text_completion"
        return {**self._head(obj), "choices": [choice],
                "usage": usage(self.prompt, self.completion)}


def sse(body: dict | str) -> str:
    """One server-sent event."""
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"
