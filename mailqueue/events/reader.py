"""EventManager: one reader over the BullMQ events streams, and what hangs off it.

BullMQ writes every job event to the Redis stream `<prefix>:<queue>:events`. bullmq's own
`QueueEvents` dies after minutes of idle and calls listeners synchronously
(docs/bullmq-notes.md #1 and #6), so this module reads the streams itself: one task per
EventManager (per process) runs one blocking XREAD over every watched stream, on its own
connection without a socket timeout, and reconnects with back-off when Redis goes away.
Listeners, SSE subscriptions, statistics and failure alerts are fed from that one reader,
which runs only while someone in this process listens (a worker process has no reader). The
audit log's job entries are not: they come from the one process per prefix that holds the
audit lease (audit_writer.py), which also records failure alerts for processes that listen
to nothing.

Which streams are read, and from where, is watched_streams.py's; what was seen,
reader_stats.py's. This module is the loop and what it feeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from mailqueue.audit import AlertCallback, AuditLog, FailureAlerts, call_safely
from mailqueue.cluster import make_client
from mailqueue.errors import MailQueueError
from mailqueue.events.audit_writer import AuditWriter
from mailqueue.events.reader_stats import EventCounts, EventStats
from mailqueue.events.streams import (
    Event,
    EventCallback,
    events_key,
    id_key,
    parse_event,
    queue_of,
    recent_events,
    stream_entries,
)
from mailqueue.events.subscriptions import Subscription, _Listener, _Subscriber
from mailqueue.events.watched_streams import DISCOVERY_INTERVAL_S, WatchedStreams
from mailqueue.settings import Settings

log = logging.getLogger(__name__)

_BLOCK_MS = 1000  # short enough that a newly watched queue joins the XREAD within a second
_READ_GUARD_S = 15.0  # a blocking read that outlives its BLOCK by this much means a dead link
_READ_COUNT = 500
_REPLAY_COUNT = 200
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 5.0


class EventManager:
    """Listeners, subscriptions, stats, audit log and alerts over one events-stream reader."""

    def __init__(
        self, connection: dict[str, Any], client: aioredis.Redis, prefix: str, settings: Settings
    ) -> None:
        # Blocking reads must never hit a socket timeout (docs/bullmq-notes.md #1).
        self._connection = {**connection, "socket_timeout": None}
        self._client = client
        self.prefix = prefix
        self.settings = settings
        self.audit = AuditLog(client, prefix, settings)
        self.alerts = FailureAlerts(client, prefix, settings)

        self._listeners: list[_Listener] = []
        self._subscribers: set[_Subscriber] = set()
        self._connection_options = connection
        self._audit_writer: AuditWriter | None = None

        self._watched = WatchedStreams(prefix)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

        # The reader's connection, and what it has seen since start.
        self._connected = False
        self._reconnects = 0
        self._last_error: str | None = None
        self._counts = EventCounts()

    # --- listeners and subscriptions ---------------------------------------------------------

    def on_event(
        self, queue: str | None, event_type: str | None, callback: EventCallback
    ) -> Callable[[], None]:
        """Call `callback(event)` for each new event of `queue` (None: all) and type (None: all).

        The callback may be sync or async; one that raises is logged. Returns the function
        that removes the listener.
        """
        listener = _Listener(queue, event_type, callback)
        self._add_interest(queue)
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
                self._drop_interest(queue)

        return unsubscribe

    def subscribe(
        self, queues: list[str] | None = None, last_id: str | None = None
    ) -> Subscription:
        """New events of `queues` (None: all), after `last_id` (a cursor or stream id) if given.

        Each event carries `cursor`; giving it back as `last_id` resumes without loss or
        duplicates. Close with `aclose()` (or `async with`).
        """
        return Subscription(self, queues, last_id)

    def attach(self, sub: _Subscriber, queues: frozenset[str] | None) -> None:
        """A subscription's place in the fan-out (its queues watched)."""
        for queue in queues or (None,):
            self._add_interest(queue)
        self._subscribers.add(sub)

    def detach(self, sub: _Subscriber, queues: frozenset[str] | None) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            for queue in queues or (None,):
                self._drop_interest(queue)

    def _add_interest(self, queue: str | None) -> None:
        if self._closed:
            raise MailQueueError("The EventManager is closed")
        self._watched.add(queue)
        self._ensure_reader()

    def _drop_interest(self, queue: str | None) -> None:
        self._watched.drop(queue)

    def _ensure_reader(self) -> None:
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise MailQueueError("Events need a running event loop (call from async code)") \
                    from None
            self._task = loop.create_task(self._read_forever(), name="mailqueue-events-reader")
        self._wake.set()

    # --- the reader ---------------------------------------------------------------------

    def redis_ms(self, local_ms: float) -> int | None:
        """`local_ms` on Redis's clock (a stream id's time), less a margin; None until the
        clock offset has been measured."""
        if self._watched.clock_offset_ms is None:
            return None
        return self._watched.to_redis_ms(local_ms)

    async def ensure_clock(self) -> None:
        if self._watched.clock_offset_ms is None:
            await self._watched.measure_clock(self._client)

    async def _read_forever(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._closed:
            conn = make_client(self._connection)
            failed = False
            try:
                await self._watched.measure_clock(conn)
                if not self._connected and self._last_error is not None:
                    log.info("Event reader reconnected to Redis")
                self._connected = True
                while not self._closed:
                    streams: dict[Any, Any] = await self._watched.streams(conn)
                    if not streams:
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), DISCOVERY_INTERVAL_S)
                        continue
                    reply = await asyncio.wait_for(
                        conn.xread(streams, count=_READ_COUNT, block=_BLOCK_MS),
                        _BLOCK_MS / 1000 + _READ_GUARD_S,
                    )
                    backoff = _BACKOFF_MIN_S
                    await self._dispatch(reply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                self._reconnects += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Event reader lost Redis (%s); retrying in %.1f s",
                            self._last_error, backoff)
            finally:
                self._connected = False
                with contextlib.suppress(Exception):
                    await conn.aclose()
            if failed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _dispatch(self, reply: Any) -> None:
        for key, entries in stream_entries(reply):
            queue = queue_of(self.prefix, key)
            for entry_id, fields in entries:
                self._watched.advance(queue, entry_id)
                event = parse_event(queue, entry_id, fields or {})
                self._counts.count(event, self._watched.clock_offset_ms)
                if event["event"] == "added" and event.get("name"):
                    self.alerts.remember_job_name(event["queue"], str(event.get("jobId")),
                                                  str(event["name"]))
                for sub in list(self._subscribers):
                    sub.offer(event)
                await self.alerts.watch(event)
                for listener in list(self._listeners):
                    if listener.wants(event):
                        await call_safely(listener.callback, dict(event), "Event listener")

    async def replay_batch(
        self, queues: frozenset[str] | None, positions: dict[str, str], floor: str
    ) -> list[Event]:
        """The next events after `positions` (else `floor`) in the given queues' streams."""
        names = set(queues) if queues is not None else (
            await self._watched.scan(self._client) | set(positions)
        )
        if not names:
            return []
        streams: dict[Any, Any] = {
            events_key(self.prefix, q): positions.get(q, floor) for q in sorted(names)
        }
        reply = await self._client.xread(streams, count=_REPLAY_COUNT)
        events = [
            parse_event(queue_of(self.prefix, key), entry_id, fields or {})
            for key, entries in stream_entries(reply) for entry_id, fields in entries
        ]
        events.sort(key=lambda e: id_key(e["id"]))
        return events

    async def get_event_stats(self) -> EventStats:
        """Events seen since start: per queue, per type, total; reader lag and connection."""
        counts = self._counts
        per_queue_type = counts.per_queue_type()
        return EventStats(
            started_at=counts.started_at, total=counts.total,
            per_queue={q: sum(c.values()) for q, c in per_queue_type.items()},
            per_type=counts.per_type(), per_queue_type=per_queue_type,
            last_event_at=counts.last_event_at, last_event_id=counts.last_event_id,
            lag_ms=counts.lag_ms(), connected=self._connected, reconnects=self._reconnects,
            last_error=self._last_error, watched_queues=self._watched.queues,
            listeners=len(self._listeners), subscribers=len(self._subscribers),
            audit_writer=None if self._audit_writer is None else self._audit_writer.stats(),
        )

    # --- audit log and alerts (mailqueue/audit.py) -----------------------------------------

    async def setup_audit_listeners(self, lease_ms: int | None = None) -> None:
        """Compete to be this prefix's audit writer (job lifecycle entries, recorded alerts).

        One process per prefix holds the audit lease and reads the events for the audit log;
        the others read nothing until the holder goes (audit_writer.py). Idempotent. Returns
        after the first claim: if this process won it, the audit log covers what follows.
        `lease_ms` (the lease's TTL) is for tests; the default is LEASE_TTL_MS.
        """
        if self._closed:
            raise MailQueueError("The EventManager is closed")
        if self._audit_writer is None:
            self._audit_writer = AuditWriter(
                self._connection_options, self._client, self.prefix, self.audit,
                self.settings, **({"lease_ms": lease_ms} if lease_ms else {}))
        await self._audit_writer.start()

    @property
    def audit_writer(self) -> AuditWriter | None:
        """This process's side of the audit lease, once setup_audit_listeners() ran."""
        return self._audit_writer

    async def record_audit(
        self, actor: str, action: str, target: str, result: str, detail: str = ""
    ) -> str:
        """Append one entry to the capped audit stream; returns its id."""
        return await self.audit.record(actor, action, target, result, detail)

    async def get_audit_log(self, n: int = 100) -> list[dict[str, Any]]:
        """The newest `n` audit entries, newest first."""
        return await self.audit.newest(n)

    def on_alert(self, callback: AlertCallback) -> Callable[[], None]:
        """Call `callback(alert)` (sync or async) on each failure alert; returns the remover.

        Alerts need every queue's failures, so this watches all queues.
        """
        self._add_interest(None)
        self.alerts.callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self.alerts.callbacks:
                self.alerts.callbacks.remove(callback)
                self._drop_interest(None)

        return unsubscribe

    async def get_alerts(self, n: int = 50) -> list[dict[str, Any]]:
        """The newest `n` alerts recorded in Redis, newest first."""
        return await self.alerts.newest(n)

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the reader and end every subscription. The shared client stays open."""
        self._closed = True
        if self._audit_writer is not None:
            await self._audit_writer.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in list(self._subscribers):
            sub.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                sub.buffer.put_nowait(None)
        self._subscribers.clear()
        self._listeners.clear()
        self.alerts.callbacks.clear()

    # --- recent events (the dashboard's events page) -----------------------------------------

    async def recent_events(
        self, queues: list[str] | None = None, event_type: str | None = None, n: int = 100,
    ) -> list[Event]:
        """The newest `n` events across `queues` (None: every queue), newest first."""
        return await recent_events(self._client, self.prefix, queues, event_type, n)

__all__ = ["EventManager"]
