"""The live layer's one-per-process part: follows the queues' events, renders shared regions.

`LiveHub` follows every queue's events through one subscription and only counts them (a
version per queue and in total); the `/live` streams (dashboard/live.py) wake on a change
and ask it for their view's regions. A render is shared by every client of the same view,
parameters and rights, and labelled with what it may serve:

- `version`: it read Redis after the events counted up to there;
- `started`: the wall-clock time it began. A client asks for a render that started no
  earlier than what it already shows, and a new page for one that started after it was
  opened: a page is never overwritten with an older picture of itself (a render kept from
  minutes ago was replayed to every new page of a quiet queue);
- `changes_at`: when the first relative time in it ("12 s ago") changes its text, so the
  client asks for a new render then, event or not (on a quiet queue those times froze).

Each region is encoded as an SSE message once per render; a client only puts its CSRF token
in (500 clients each encoding the same 20 kB of rows was most of the process's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sse_starlette.event import ServerSentEvent
from starlette.requests import Request

from mailqueue.cluster import redis_error_reason
from mailqueue.manager import MailManager

from .formatting import relative_times
from .security import identity_of

log = logging.getLogger(__name__)

LiveView = Callable[[Request, Mapping[str, str]], Awaitable[dict[str, str]]]

RETRY_S = 1.0
# How often the hub asks Redis whether it answers (one PING per process, not per client).
PROBE_INTERVAL_S = 1.0
# A region holding relative times is rendered again when one changes, but at most this often.
MIN_REFRESH_S = 1.0
CSRF_PLACEHOLDER = "__mailqueue_csrf_placeholder__"
MAX_CACHED = 1000


@dataclass
class Render:
    """One shared render of a view's regions, and what it may serve (see the module doc)."""

    version: int
    started: float
    fragments: dict[str, str] = field(default_factory=dict)
    changes_at: float = math.inf
    cursor: str | None = None
    _wire: dict[str, bytes] | None = None

    def serves(self, version: int, not_before: float) -> bool:
        return self.version >= version and self.started >= not_before

    def messages(self) -> dict[str, bytes]:
        """Each region as one encoded SSE message, the CSRF placeholder still in."""
        if self._wire is None:
            self._wire = {name: ServerSentEvent(data=html, event=name, id=self.cursor).encode()
                          for name, html in self.fragments.items()}
        return self._wire


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
        self._renders: dict[tuple[Any, ...], Render] = {}
        self._rendering: dict[tuple[Any, ...], tuple[Render, asyncio.Future[Render]]] = {}

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
                await self.mail.monitoring.ping()
                trouble = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                trouble = redis_error_reason(exc, self.mail.settings.redis_command_timeout_s)
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
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))

    async def render(self, view: LiveView, request: Request, params: Mapping[str, str],
                     version: int, not_before: float) -> Render:
        """The view's regions at `version` or later, from a render started at `not_before`
        or later, rendered once for every client that shares it.

        A render in flight that started too early for this client is not joined, nor is a
        second one started beside it: the client waits for it to end and looks again, so the
        clients that arrived meanwhile share the one render that follows. Without the
        sharing, a hundred clients woken by the same event started a hundred identical
        renders at once and ran the Redis connection pool dry ("Too many connections").
        """
        key = (id(view), tuple(sorted(params.items())), identity_of(request).can_write)
        while True:
            cached = self._renders.get(key)
            if cached is not None and cached.serves(version, not_before):
                return cached
            running = self._rendering.get(key)
            if running is None:
                # Render with a placeholder token so the HTML can be shared between clients.
                scope = dict(request.scope)
                scope["mailqueue.csrf"] = CSRF_PLACEHOLDER
                label = Render(version, time.time())
                task = asyncio.ensure_future(
                    self._render(key, view, Request(scope, request.receive), params, label))
                task.add_done_callback(_retrieve)
                running = self._rendering[key] = (label, task)
            elif not running[0].serves(version, not_before):
                # Shielded from this client's cancellation: others may be waiting on it.
                await asyncio.wait({running[1]})
                continue
            # Shielded: a client that goes away must not cancel a render others are awaiting.
            return await asyncio.shield(running[1])

    async def _render(self, key: tuple[Any, ...], view: LiveView, request: Request,
                      params: Mapping[str, str], label: Render) -> Render:
        try:
            with relative_times() as changes_at:
                label.fragments = await view(request, params)
        finally:
            running = self._rendering.get(key)
            if running is not None and running[0] is label:
                del self._rendering[key]
        label.changes_at = max(changes_at[0], label.started + MIN_REFRESH_S)
        label.cursor = self.cursor
        if len(self._renders) > MAX_CACHED:
            self._renders.clear()
        cached = self._renders.get(key)
        if cached is None or cached.started <= label.started:
            self._renders[key] = label
        return label


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Marks a shared render's failure as seen: its clients (if any are left) report it."""
    if not task.cancelled():
        task.exception()
