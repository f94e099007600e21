"""A dashboard bound to the test's MailManager, driven over ASGI by httpx."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from dashboard.app import create_app
from mailqueue.manager import MailManager

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_HEADER = re.compile(r'"X-CSRF-Token": "([^"]+)"')


@pytest.fixture
async def app(mail: MailManager) -> Starlette:
    application = create_app(mail.settings, mail)
    application.state.mail = mail  # httpx's ASGI transport runs no lifespan
    return application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as c:
        yield c


async def csrf_token(client: httpx.AsyncClient, path: str = "/") -> str:
    """Load a page as a browser would; the token is in the page, the cookie in the jar."""
    page = await client.get(path)
    match = CSRF_HEADER.search(page.text) or CSRF_INPUT.search(page.text)
    assert match, f"no CSRF token in {path}"
    return match.group(1)


@pytest.fixture
async def live_server(app: Starlette) -> AsyncIterator[str]:
    """The app under a real uvicorn on a free port (streaming responses need a server)."""
    import asyncio

    import uvicorn

    from mailqueue.redis_server import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn stopped at start"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def read_sse(response: httpx.Response, count: int, timeout: float = 10.0
                   ) -> list[dict[str, str]]:
    """Read `count` server-sent events (comments and pings skipped) from a streaming response."""
    import asyncio

    events: list[dict[str, str]] = []
    current: dict[str, str] = {}

    async def read() -> None:
        async for line in response.aiter_lines():
            if not line:
                if "data" in current or "event" in current:
                    events.append(dict(current))
                    if len(events) >= count:
                        return
                current.clear()
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            current[key] = current[key] + "\n" + value if key == "data" and key in current \
                else value

    await asyncio.wait_for(read(), timeout)
    return events
