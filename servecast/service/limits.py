"""Limits that keep the HTTP estimate service answering under slow or abusive clients.

`ServeLimits` (all enforced by `run_uvicorn`; uvicorn alone has no timeout on reading a
request, so a client that sends a header a byte at a time holds its connection forever):

    read_timeout_s  10   the whole request (headers and body) must arrive within this many
                         seconds of the connection opening or of its first byte after a
                         previous request; else 408 and the connection is closed
    keep_alive_s     5   an idle keep-alive connection is closed after this many seconds
    max_connections 512  connections + requests in flight; beyond it uvicorn answers 503
    max_header_bytes 65536  request line + headers; more before the headers end: 431, close

`BodyLimit` (ASGI middleware) answers 413 to a body over `MAX_BODY_BYTES` before the app
parses it, whether it declares a content-length or is chunked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the CLI imports this module at every start
    import asyncio

#: largest request body, bytes (holds 10,000 kernel-latency requests; parse cost of the
#: largest: docs/results.md#http-service; the 8 MB 1M-expert MoE body of issue 21 is
#: refused unparsed)
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServeLimits:
    """Connection limits of `run_uvicorn` (see the module docstring for each)."""

    read_timeout_s: float = 10.0
    keep_alive_s: int = 5
    max_connections: int = 512
    max_header_bytes: int = 65536


class BodyLimit:
    """ASGI middleware: 413 `{"message", "detail"}` for an HTTP body over `max_bytes`; the
    app gets the body it would have read otherwise (buffered here, at most `max_bytes`)."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client gone: let the app see it
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(send)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    async def _too_large(self, send: Any) -> None:
        content = json.dumps({"message": f"body: larger than {self.max_bytes} bytes; send "
                              "smaller batches", "detail": None}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"connection", b"close"),
            (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})


def _replay(messages: list[dict], then: Any = None) -> Any:
    """An ASGI receive that gives `messages`, then defers to `then` (e.g. disconnects)."""
    queue = list(messages)

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


def _timed_protocol(read_timeout_s: float, max_header_bytes: int) -> type:
    """uvicorn's httptools protocol with a deadline on reading each request and a cap on
    its head (httptools itself has none: a 5 MB header line was accepted)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TimedHttpToolsProtocol(HttpToolsProtocol):
        """Closes the connection (408) when a request is not fully read in time, (431) when
        its request line and headers exceed `max_header_bytes`."""

        _deadline: asyncio.TimerHandle | None = None
        _head_bytes = 0  # request line + header bytes of the request being read

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()
            self._head_bytes = 0

        def on_url(self, url: bytes) -> None:
            self._head_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._head_bytes > max_header_bytes:  # refused before the app sees it
                self._refuse(b"431 Request Header Fields Too Large")
                return
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_bytes > max_header_bytes:  # a head still arriving
                self._refuse(b"431 Request Header Fields Too Large")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _read_timed_out(self) -> None:
            self._deadline = None
            self._refuse(b"408 Request Timeout")

        def _refuse(self, status: bytes) -> None:
            """Answer `status` (unless a response has begun) and close the connection."""
            self._disarm()
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n"
                                     b"connection: close\r\n\r\n")
            self.transport.close()

    return TimedHttpToolsProtocol


def run_uvicorn(app: Any, host: str, port: int, log_level: str, limits: ServeLimits) -> None:
    """Serve `app` on uvicorn at host:port with `limits` until interrupted."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False,
        http=_timed_protocol(limits.read_timeout_s, limits.max_header_bytes),
        timeout_keep_alive=limits.keep_alive_s, limit_concurrency=limits.max_connections)
    uvicorn.Server(config).run()
