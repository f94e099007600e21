"""Scenario 7 of the fault suite (who may change what, and what can never run): static
paths cannot leave static/ (`..`, `%2e%2e%2f`, double-encoded, backslashes), asked
through a real uvicorn with raw request lines and at the ASGI level.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

from starlette.applications import Starlette

from tests.faults.asgi_raw import asgi_request
from tests.faults.security.security_support import STATS, VIEWER, basic

SETTINGS_SOURCE = (Path(__file__).resolve().parents[3] / "mailqueue" / "settings.py").read_bytes()

TRAVERSALS = [
    "/static/../mailqueue/settings.py", "/static/../../main/mailqueue/settings.py",
    "/static/%2e%2e/mailqueue/settings.py", "/static/%2e%2e%2fmailqueue%2fsettings.py",
    "/static/..%2fmailqueue%2fsettings.py", "/static/..%2Fmailqueue%2Fsettings.py",
    "/static/%252e%252e%252fmailqueue%252fsettings.py", "/static/..%252fmailqueue/settings.py",
    "/static/..\\mailqueue\\settings.py", "/static/..%5cmailqueue%5csettings.py",
    "/static/%2e%2e%5cmailqueue%5csettings.py", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "/static/....//mailqueue/settings.py",
    "/static/vendor/../../mailqueue/settings.py", "/static/.%2e/mailqueue/settings.py",
    "/static/%c0%ae%c0%ae/mailqueue/settings.py", "/static/%00../mailqueue/settings.py",
    "/static/app.css%00.py", "/static/../.git/config", "/static/%2e%2e/.git/config",
]


async def _raw_get(port: int, target: str, authorization: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Authorization: {authorization}\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_static_paths_cannot_leave_static(server_port: int,
                                                apps: dict[str, Starlette]) -> None:
    secret = SETTINGS_SOURCE
    auth = basic(*VIEWER)
    status, body = await _raw_get(server_port, "/static/app.css", auth)
    assert status == 200 and body  # the control: static files are served
    statuses: collections.Counter[int] = collections.Counter()
    for target in TRAVERSALS:
        status, body = await _raw_get(server_port, target, auth)
        statuses[status] += 1
        assert status in (400, 404), (target, status, body[:200])
        assert b"class Settings" not in body and b"root:" not in body, target
        assert b"[core]" not in body, target
        # And at the ASGI level, with the path exactly as written (decoded once).
        from urllib.parse import unquote

        response = await asgi_request(apps["auth"], "GET", unquote(target),
                                      raw_path=target.encode(),
                                      headers={"authorization": auth})
        assert response.error is None, (target, response.error)
        assert response.status in (400, 404), (target, response.status)
        assert secret[:200] not in response.body
    STATS["traversals"] = len(TRAVERSALS)
    STATS["traversal_statuses"] = dict(statuses)  # type: ignore[assignment]
