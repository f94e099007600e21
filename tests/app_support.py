"""The dashboard app bound to the test's MailManager: over ASGI (httpx) or a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from mailqueue.dashboard.app import create_app
from mailqueue.manager import MailManager
from tests.waiting import eventually


@pytest.fixture
async def app(mail: MailManager) -> Starlette:
    application = create_app(mail.settings, mail)
    application.state.mail = mail  # no lifespan under httpx's transport or lifespan="off"
    application.state.live_hub = None
    return application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as c:
        yield c


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Starlette) -> AsyncIterator[int]:
    """`app` under a real uvicorn on a free port (streaming responses need a server); the
    port, once uvicorn has started."""
    import uvicorn

    from mailqueue.redis_server import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    def started() -> bool:
        assert not task.done(), "uvicorn stopped at start"
        return server.started

    await eventually(started, 20, "uvicorn started", interval=0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def live_server(app: Starlette) -> AsyncIterator[str]:
    async with uvicorn_serving(app) as port:
        yield f"http://127.0.0.1:{port}"
    hub = getattr(app.state, "live_hub", None)
    if hub is not None:
        await hub.close()
