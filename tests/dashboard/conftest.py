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
