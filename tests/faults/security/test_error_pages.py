"""Scenario 7 of the fault suite (who may change what, and what can never run): error
pages (404, 405, 422) do not reflect their input unescaped.
"""

from __future__ import annotations

import collections
from urllib.parse import quote

from starlette.applications import Starlette

from tests.faults.asgi_raw import asgi_request
from tests.faults.security.security_support import ADMIN, QUEUE, STATS, TOKEN, basic
from tests.faults.xss_corpus import CORPUS, html_problems


async def test_error_pages_do_not_reflect_input(apps: dict[str, Starlette],
                                                seeded: dict[str, str]) -> None:
    headers = {"authorization": basic(*ADMIN), "cookie": f"mq_csrf={TOKEN}",
               "x-csrf-token": TOKEN}
    seen: collections.Counter[int] = collections.Counter()
    for payload in CORPUS:
        encoded = quote(payload, safe="")
        cases = [
            ("GET", f"/{payload}", b"", 404),  # from the router
            ("GET", f"/queues/{payload.replace('/', '')}x", b"", 404),  # queue page
            ("GET", f"/queues/{QUEUE}/jobs/{payload}", b"", 404),  # job page
            ("GET", f"/outbox/{payload.replace('/', '')}", b"", 404),  # message
            ("GET", f"/queues/{QUEUE}/pause", b"", 405),
            ("GET", f"/queues/{QUEUE}", f"state={encoded}".encode(), 422),
            ("GET", f"/queues/{QUEUE}", f"sort={encoded}&page=x".encode(), 422),
            ("POST", f"/queues/{QUEUE}/clean", b"", 422),  # the state is in the form
            ("POST", f"/queues/{QUEUE}/add-job", b"", 422),  # bad JSON
        ]
        for method, path, query, status in cases:
            body = b""
            request_headers = dict(headers)
            if method == "POST":
                from urllib.parse import urlencode

                request_headers["content-type"] = "application/x-www-form-urlencoded"
                body = urlencode({"state": payload, "name": payload, "data": payload,
                                  "grace": payload}).encode()
            response = await asgi_request(apps["auth"], method, path, query=query,
                                          headers=request_headers, body=body)
            assert response.error is None, response.error
            assert response.status == status, (method, path, query, response.status)
            seen[response.status] += 1
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/html"):
                assert not html_problems(response.text), (path, html_problems(response.text))
            else:
                assert content_type.startswith(("text/plain", "application/json")), path
                assert response.headers.get("x-content-type-options") == "nosniff", path
    assert set(seen) == {404, 405, 422}, seen
    STATS["error_pages"] = sum(seen.values())
