"""A dashboard bound to the test's MailManager, driven over ASGI by httpx."""

from __future__ import annotations

import re

import httpx

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_HEADER = re.compile(r'"X-CSRF-Token": "([^"]+)"')






async def csrf_token(client: httpx.AsyncClient, path: str = "/") -> str:
    """Load a page as a browser would; the token is in the page, the cookie in the jar."""
    page = await client.get(path)
    match = CSRF_HEADER.search(page.text) or CSRF_INPUT.search(page.text)
    assert match, f"no CSRF token in {path}"
    return match.group(1)




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
