"""Live pages over server-sent events: push instead of polling, coalesced, resumable.

Two streams:

- `/live?view=<page>&...` sends a page's live regions as rendered HTML partials (the same
  partials the page includes), one SSE event per region, named after the `sse-swap` that
  receives it. One `LiveHub` per process (dashboard/live_hub.py) follows every queue's
  events through one subscription and only counts them; a client wakes when its queues
  changed, renders, and then sleeps `MIN_INTERVAL_S`, so a burst of thousands of events per
  second becomes at most a couple of renders per second per page. Renders are shared:
  clients looking at the same view with the same rights reuse one render per change (their
  CSRF token is put in after), and clients that wake together await the one render in
  flight instead of each starting their own.
  A client that connects (or reconnects) gets a full render first, so it misses no state,
  from a render started after it connected: never an older picture than its page.
  A region holding relative times ("12 s ago") is rendered again when one of them changes
  its text, without any event: on a quiet queue they froze until the next event.
  Every view's stream also sends the `sidebar` (every queue's counts, on every page): again
  when ANY queue changed (the hub's total version), but at most every
  `SIDEBAR_INTERVAL_S`, since it reads every queue's counts.
- `/api/events/stream?queues=a,b` sends every event as JSON, with the subscription's cursor
  as the SSE id: a client reconnecting with `Last-Event-ID` resumes exactly, no event lost
  and none twice (the stream ids are Redis's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mailqueue.cluster import redis_error_reason
from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager

from .context import live_sidebar, mail_of, no_live_regions
from .errors import REDIS_TROUBLE
from .live_hub import CSRF_PLACEHOLDER, RETRY_S, LiveHub, LiveView, Render
from .security import csrf_token_of
from .views.events import live_events
from .views.flows import live_flow
from .views.jobs import live_job
from .views.overview import live_overview
from .views.queues import live_queue

log = logging.getLogger(__name__)

# The page each `/live?view=` name stands for. The views never import this hub, so the table
# refers to them directly (a table of import strings broke when the package was renamed).
LIVE_VIEWS: dict[str, LiveView] = {
    "overview": live_overview,
    "queue": live_queue,
    "job": live_job,
    "flow": live_flow,
    "events": live_events,
    "sidebar": no_live_regions,  # pages whose only live part is the sidebar
}
SIDEBAR_INTERVAL_S = 3.0  # the sidebar reads every queue: at most one render per 3 s per page
MIN_INTERVAL_S = 0.5  # at most two renders a second per client, whatever the event rate
HEARTBEAT_S = 15
BANNER_EVENT = "banner"
_PLACEHOLDER = CSRF_PLACEHOLDER.encode()

__all__ = ["LIVE_VIEWS", "LiveHub", "event_stream", "hub_of", "live"]


def hub_of(request: Request) -> LiveHub:
    hub: LiveHub | None = getattr(request.app.state, "live_hub", None)
    if hub is None:
        hub = LiveHub(mail_of(request))
        request.app.state.live_hub = hub
    hub.start()
    return hub


class _Shown:
    """What one client shows of one render stream (its view, or its sidebar)."""

    def __init__(self, opened: float) -> None:
        self.version: int | None = None  # None: nothing shown yet, render in full
        self.started = opened  # never show a render that started before this
        self.changes_at = math.inf  # when a relative time in what is shown changes

    def forget(self) -> None:
        """Render again in full (Redis came back), from a render started from now on."""
        self.version, self.started, self.changes_at = None, time.time(), math.inf

    def due(self, version: int, now: float) -> bool:
        return version != self.version or now >= self.changes_at

    def not_before(self, now: float) -> float:
        """The earliest start of a render this client may show next."""
        return max(self.started, self.changes_at) if now >= self.changes_at else self.started

    def show(self, render: Render, version: int) -> None:
        self.version = version
        self.started = max(self.started, render.started)
        self.changes_at = render.changes_at


async def live(request: Request) -> Response:
    """The live regions of one page, pushed when its queues change."""
    params = {k: v for k, v in request.query_params.items() if k != "view"}
    view = LIVE_VIEWS.get(request.query_params.get("view", ""))
    if view is None:
        return PlainTextResponse("Unknown live view", status_code=404)
    hub = hub_of(request)
    queue = params.get("queue") or None
    # The queue the page is about, highlighted in the sidebar (a flow names it `flow_queue`:
    # its stream follows every queue).
    sidebar_params = {"queue": queue or params.get("flow_queue") or ""}
    token = csrf_token_of(request).encode()

    async def stream() -> AsyncIterator[dict[str, Any] | bytes]:
        # The page was rendered before it opened this stream: anything rendered from now on
        # is no older than the page.
        opened = time.time()
        shown, sidebar = _Shown(opened), _Shown(opened)
        sidebar_at = -SIDEBAR_INTERVAL_S
        banner_shown: str | None = None
        while True:
            if hub.trouble is not None:
                # Redis does not answer: say so once, render nothing (it would only wait
                # or fail), and render everything again once it answers.
                if banner_shown != hub.trouble:
                    banner_shown = hub.trouble
                    yield {"event": BANNER_EVENT, "data": _banner(hub.trouble)}
                shown.forget()
                sidebar.forget()
                await hub.wait_for_change(HEARTBEAT_S)
                continue
            version = hub.version(queue)
            total = hub.version(None)
            now = time.time()
            sidebar_next = sidebar_at + SIDEBAR_INTERVAL_S
            view_due = shown.due(version, now)
            sidebar_due = sidebar.due(total, now) and time.monotonic() >= sidebar_next
            if not (view_due or sidebar_due):
                # Wake at the next change, when the sidebar's pending change is due, or when
                # a relative time on the page changes its text.
                wake = min(shown.changes_at - now, HEARTBEAT_S)
                if sidebar.due(total, now):
                    wake = min(wake, sidebar_next - time.monotonic())
                await hub.wait_for_change(max(wake, 0.05))
                continue
            renders: list[Render] = []
            try:
                if view_due:
                    renders.append(render := await hub.render(
                        view, request, params, version, shown.not_before(now)))
                    shown.show(render, version)
                if sidebar_due:
                    renders.append(render := await hub.render(
                        live_sidebar, request, sidebar_params, total, sidebar.not_before(now)))
                    sidebar.show(render, total)
                    sidebar_at = time.monotonic()
            except Exception as exc:  # Redis errors and the like: say so, keep going
                if not _is_redis_trouble(exc):
                    raise
                banner_shown = _reason(hub.mail, exc)
                yield {"event": BANNER_EVENT, "data": _banner(banner_shown)}
                await asyncio.sleep(RETRY_S)
                continue
            if banner_shown is not None:
                banner_shown = None
                yield {"event": BANNER_EVENT, "data": ""}
            for render in renders:
                for message in render.messages().values():
                    # The token differs per client: the only per-client work on a message.
                    yield message.replace(_PLACEHOLDER, token)
            await asyncio.sleep(MIN_INTERVAL_S)
            # Changes made during the render or the pause are not missed: look again
            # before waiting for the next one.

    return EventSourceResponse(stream(), ping=HEARTBEAT_S, headers={"Cache-Control": "no-store"})


def _is_redis_trouble(exc: BaseException) -> bool:
    return isinstance(exc, (MailQueueError, *REDIS_TROUBLE))


def _reason(mail: MailManager, exc: BaseException) -> str:
    return redis_error_reason(exc, mail.settings.redis_command_timeout_s)


def _banner(reason: str) -> str:
    from markupsafe import escape

    return str(escape(f"Live updates paused: {reason}. Retrying…"))


async def event_stream(request: Request) -> Response:
    """Every event of the chosen queues as JSON; resumes exactly from Last-Event-ID."""
    raw = request.query_params.get("queues", "")
    queues = [q for q in (part.strip() for part in raw.split(",")) if q] or None
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_id")
    mail = mail_of(request)
    try:
        subscription = mail.subscribe(queues, last_id or None)
    except MailQueueError as exc:
        return PlainTextResponse(str(exc), status_code=400)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        started = time.monotonic()
        async with subscription:
            try:
                async for event in subscription:
                    cursor = event.pop("cursor")
                    yield {"event": "job-event", "id": cursor,
                           "data": json.dumps(event, default=str, separators=(",", ":"))}
                    if time.monotonic() - started > 24 * 3600:  # let proxies rotate
                        break
            except REDIS_TROUBLE as exc:
                # End the stream cleanly: the client reconnects with Last-Event-ID and
                # resumes exactly where it was once Redis is back.
                log.info("event stream ended: Redis is unavailable (%s)", exc)

    return EventSourceResponse(stream(), ping=HEARTBEAT_S, headers={"Cache-Control": "no-store"})
