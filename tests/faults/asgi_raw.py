"""A raw ASGI request: the path exactly as a server would hand it to the app (no URL
normalisation), a stream read until its first chunk, an exception caught as a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    error: str | None = None  # an exception the app raised (a 500)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def is_html(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/html")


async def asgi_request(
    app: Starlette, method: str, path: str, *, raw_path: bytes | None = None,
    query: bytes = b"", headers: dict[str, str] | None = None, body: bytes = b"",
    stream_wait: float = 1.0,
) -> RawResponse:
    """Call the app with exactly this path (decoded) and raw path, like a server would.

    A streaming answer (SSE) is read until its first body chunk (or `stream_wait` s), then
    the client disconnects. An exception escaping the app is a 500 with the traceback.
    """
    header_list = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in (headers or {}).items()]
    header_list.append((b"host", b"127.0.0.1:3000"))
    if body:
        header_list.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path,
        "raw_path": raw_path if raw_path is not None else quote(path).encode(),
        "query_string": query, "root_path": "", "headers": header_list,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 3000),
        "state": {},
    }
    sent_body = False
    disconnect = asyncio.Event()
    start: dict[str, Any] = {}
    chunks: list[bytes] = []
    got_body = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                chunks.append(message["body"])
            if message.get("body") or not message.get("more_body", False):
                got_body.set()

    task = asyncio.create_task(app(scope, receive, send))
    error: str | None = None
    try:
        # Until the app is done, or has begun to answer (a stream never ends by itself).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        stream_started: float | None = None
        while not task.done() and loop.time() < deadline:
            streaming = "text/event-stream" in dict(start.get("headers", [])).get(
                b"content-type", b"").decode("latin-1")
            if streaming:
                stream_started = stream_started or loop.time()
                # Its first event (a page's live regions come at once), or give up on it.
                if got_body.is_set() or loop.time() - stream_started > stream_wait:
                    break
            await asyncio.wait({task}, timeout=0.02)
        if not task.done():
            disconnect.set()  # the client goes away, as a browser leaving the page
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 5)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not start:
                error = f"no answer within 30 s to {method} {path}"
        elif task.exception() is not None:
            import traceback

            exc = task.exception()
            assert exc is not None
            error = "".join(traceback.format_exception(exc))
    finally:
        if not task.done():
            task.cancel()
    headers_out = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in start.get("headers", [])}
    status = int(start.get("status", 500))
    if error is not None:
        status = 500
    return RawResponse(status, headers_out, b"".join(chunks), error)
