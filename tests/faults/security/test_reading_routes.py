"""Scenario 7 of the fault suite (who may change what, and what can never run): every
route that is not mutating - pages, JSON, the SSE streams (`/live`, `/api/events/stream`),
static files, health and metrics - needs credentials too; the viewer may read them.
"""

from __future__ import annotations

from starlette.applications import Starlette

from tests.faults.asgi_raw import asgi_request
from tests.faults.security.security_support import STATS, VIEWER, basic, path_of, reading_routes

# What a reading route needs in its query to answer with its page (others need none).
QUERIES = {"live": b"view=overview", "schedule_preview": b"cron=0+9+*+*+*",
           "api_schedule_preview": b"cron=0+9+*+*+*"}


async def test_every_page_api_stream_and_file_needs_credentials(
    apps: dict[str, Starlette], seeded: dict[str, str]
) -> None:
    reading = reading_routes()
    names = {r.name for r in reading}
    assert {"live", "api_event_stream", "static", "health", "metrics", "api_queues"} <= names
    for route in reading:
        path = path_of(route, seeded)
        query = QUERIES.get(route.name or "", b"")
        for headers in ({}, {"authorization": basic("viewer", "nope")},
                        {"authorization": "Bearer nope"}):
            response = await asgi_request(apps["auth"], "GET", path, query=query,
                                          headers=headers)
            assert response.status == 401, (path, headers, response.status)
            assert not response.body.startswith(b"<"), path  # says nothing of the page
        viewed = await asgi_request(apps["auth"], "GET", path, query=query,
                                    headers={"authorization": basic(*VIEWER)})
        assert viewed.error is None, viewed.error
        # The viewer reads every page of seeded data; a route that only points elsewhere
        # (a job's messages without htmx) sends it to a page of the dashboard.
        location = dict(viewed.headers).get("location", "")
        assert viewed.status == 200 or (viewed.status == 303 and location.startswith("/")), \
            (path, viewed.status)
        if route.name in ("live", "api_event_stream"):
            assert viewed.status == 200
            assert viewed.headers["content-type"].startswith("text/event-stream"), path
        STATS["reading_routes"] += 1
