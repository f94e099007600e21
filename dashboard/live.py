"""Live pages over server-sent events: push instead of polling, coalesced, resumable.

Two streams:

- `/live?view=<page>&...` sends a page's live regions as rendered HTML partials (the same
  partials the page includes), one SSE event per region, named after the `sse-swap` that
  receives it. One `LiveHub` per process follows every queue's events through one
  subscription and only counts them; a client wakes when its queues changed, renders, and
  then sleeps `MIN_INTERVAL_S`, so a burst of thousands of events per second becomes at most
  a couple of renders per second per page. Renders are shared: clients looking at the same
  view with the same rights reuse one render per change (their CSRF token is put in after),
  and clients that wake together await the one render in flight instead of each starting
  their own.
  A client that reconnects gets a full render first, so it misses no state.
  Every view's stream also sends the `sidebar` (every queue's counts, on every page): again
  when ANY queue changed (the hub's total version), but at most every
  `SIDEBAR_INTERVAL_S`, since it reads every queue's counts.
- `/api/events/stream?queues=a,b` sends every event as JSON, with the subscription's cursor
  as the SSE id: a client reconnecting with `Last-Event-ID` resumes exactly, no event lost
  and none twice (the stream ids are Redis's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mailqueue.cluster import redis_error_reason
from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager

from .actions import mail_of
from .context import live_sidebar, no_live_regions
from .security import csrf_token_of, identity_of
from .views.events import live_events
from .views.flows import live_flow
from .views.jobs import live_job
from .views.overview import live_overview
from .views.queues import live_queue

log = logging.getLogger(__name__)

LiveView = Callable[[Request, Mapping[str, str]], Awaitable[dict[str, str]]]

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
RETRY_S = 1.0
# How often the hub asks Redis whether it answers (one PING per process, not per client).
PROBE_INTERVAL_S = 1.0
CSRF_PLACEHOLDER = "__mailqueue_csrf_placeholder__"
BANNER_EVENT = "banner"


class LiveHub:
    """Follows every queue's events once per process and tells waiting clients what changed."""

    def __init__(self, mail: MailManager) -> None:
        self.mail = mail
        self.versions: Counter[str] = Counter()
        self.total = 0
        self.cursor: str | None = None
        self.connected = False
        # Why Redis does not answer (the banner's text), None while it does.
        self.trouble: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._renders: dict[tuple[Any, ...], tuple[int, dict[str, str]]] = {}
        self._rendering: dict[tuple[Any, ...], tuple[int, asyncio.Future[dict[str, str]]]] = {}

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="mailqueue-live-hub")
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._watch_redis(), name="mailqueue-live-probe")

    async def close(self) -> None:
        for task in (self._task, self._probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._probe = None

    async def _watch_redis(self) -> None:
        """Keep `trouble` up to date, waking every client when it changes.

        A stalled Redis (DEBUG SLEEP, a huge Lua script, a stuck fork) fails nothing by
        itself: the event reader's XREAD simply waits, no event comes, so no render runs to
        fail and show the banner. A PING on the manager's client, which gives up after
        REDIS_COMMAND_TIMEOUT_S, notices it, and notices when Redis answers again.
        """
        while True:
            try:
                await self.mail.client.ping()
                trouble = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                trouble = _reason(self.mail, exc)
            if trouble != self.trouble:
                if trouble is not None:
                    log.warning("live pages: %s", trouble)
                self.trouble = trouble
                self._wake()
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _follow(self) -> None:
        while True:
            try:
                async with self.mail.subscribe(None) as subscription:
                    self.connected = True
                    async for event in subscription:
                        self.versions[event["queue"]] += 1
                        self.total += 1
                        self.cursor = event.get("cursor")
                        self._wake()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live hub lost its event subscription; retrying")
                self.connected = False
                self._wake()
                await asyncio.sleep(RETRY_S)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def version(self, queue: str | None) -> int:
        return self.versions[queue] if queue else self.total

    async def wait_for_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def render(
        self, view: LiveView, request: Request, params: Mapping[str, str], version: int
    ) -> dict[str, str]:
        """The view's regions at `version` or later, rendered once for every client that
        shares it.

        A render is labelled with the version its first client saw when it started: it reads
        Redis after every event counted up to there, so it serves any client that saw that
        version or an earlier one, finished (cached) or still in flight. Without the in-flight
        sharing, a hundred clients woken by the same event started a hundred identical
        renders at once, and ran the Redis connection pool dry ("Too many connections").
        """
        key = (id(view), tuple(sorted(params.items())), identity_of(request).can_write)
        cached = self._renders.get(key)
        if cached is not None and cached[0] >= version:
            return cached[1]
        running = self._rendering.get(key)
        if running is None or running[0] < version:
            # Render with a placeholder token so the HTML can be shared between clients.
            scope = dict(request.scope)
            scope["mailqueue.csrf"] = CSRF_PLACEHOLDER
            task = asyncio.ensure_future(
                self._render(key, view, Request(scope, request.receive), params, version))
            task.add_done_callback(_retrieve)
            running = self._rendering[key] = (version, task)
        # Shielded: a client that goes away must not cancel a render others are awaiting.
        return await asyncio.shield(running[1])

    async def _render(self, key: tuple[Any, ...], view: LiveView, request: Request,
                      params: Mapping[str, str], version: int) -> dict[str, str]:
        try:
            fragments = await view(request, params)
        finally:
            running = self._rendering.get(key)
            if running is not None and running[0] == version:
                del self._rendering[key]
        if len(self._renders) > 1000:
            self._renders.clear()
        cached = self._renders.get(key)
        if cached is None or cached[0] <= version:
            self._renders[key] = (version, fragments)
        return fragments


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Marks a shared render's failure as seen: its clients (if any are left) report it."""
    if not task.cancelled():
        task.exception()


def hub_of(request: Request) -> LiveHub:
    hub: LiveHub | None = getattr(request.app.state, "live_hub", None)
    if hub is None:
        hub = LiveHub(mail_of(request))
        request.app.state.live_hub = hub
    hub.start()
    return hub


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
    token = csrf_token_of(request)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        sent_version: int | None = None
        sidebar_version: int | None = None
        sidebar_at = -SIDEBAR_INTERVAL_S
        banner_shown: str | None = None
        while True:
            if hub.trouble is not None:
                # Redis does not answer: say so once, render nothing (it would only wait
                # or fail), and render everything again once it answers.
                if banner_shown != hub.trouble:
                    banner_shown = hub.trouble
                    yield {"event": BANNER_EVENT, "data": _banner(hub.trouble)}
                sent_version = sidebar_version = None
                await hub.wait_for_change(HEARTBEAT_S)
                continue
            version = hub.version(queue)
            total = hub.version(None)
            sidebar_next = sidebar_at + SIDEBAR_INTERVAL_S
            view_due = version != sent_version
            sidebar_due = total != sidebar_version and time.monotonic() >= sidebar_next
            if not (view_due or sidebar_due):
                # A sidebar change not due yet: wake when it is (or at the next change).
                pending = total != sidebar_version
                await hub.wait_for_change(
                    max(sidebar_next - time.monotonic(), 0.05) if pending else HEARTBEAT_S)
                continue
            try:
                fragments = await hub.render(view, request, params, version) if view_due \
                    else {}
                if sidebar_due:
                    fragments = {**fragments, **await hub.render(
                        live_sidebar, request, sidebar_params, total)}
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
            if view_due:
                sent_version = version
            if sidebar_due:
                sidebar_version, sidebar_at = total, time.monotonic()
            for name, html in fragments.items():
                yield _message(name, html, token, hub.cursor)
            await asyncio.sleep(MIN_INTERVAL_S)
            # Changes made during the render or the pause are not missed: look again
            # before waiting for the next one.

    return EventSourceResponse(stream(), ping=HEARTBEAT_S, headers={"Cache-Control": "no-store"})


def _message(name: str, html: str, token: str, cursor: str | None) -> dict[str, Any]:
    """One rendered region as an SSE message, with this client's CSRF token put in."""
    message: dict[str, Any] = {"event": name, "data": html.replace(CSRF_PLACEHOLDER, token)}
    if cursor:
        message["id"] = cursor
    return message


def _is_redis_trouble(exc: BaseException) -> bool:
    if isinstance(exc, MailQueueError | OSError | ConnectionError):
        return True
    return type(exc).__module__.startswith("redis")


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
            except (RedisError, OSError) as exc:
                # End the stream cleanly: the client reconnects with Last-Event-ID and
                # resumes exactly where it was once Redis is back.
                log.info("event stream ended: Redis is unavailable (%s)", exc)

    return EventSourceResponse(stream(), ping=HEARTBEAT_S, headers={"Cache-Control": "no-store"})
