"""EventManager: one reader over the BullMQ events streams, and what hangs off it.

BullMQ writes every job event to the Redis stream `<prefix>:<queue>:events`. bullmq's own
`QueueEvents` dies after minutes of idle and calls listeners synchronously (BULLMQ-NOTES items
1 and 6), so this module reads the streams itself: one task per EventManager (per process)
runs one blocking XREAD over every watched stream, on its own connection without a socket
timeout, and reconnects with back-off when Redis goes away. Listeners, SSE subscriptions,
statistics, the audit log and failure alerts are all fed from that one reader.

Where each watched stream starts: at the moment interest in it began (the first listener or
subscription for that queue, or for all queues), expressed as a stream id from Redis's clock.
That is XREAD's "$" taken at the right instant, and it also covers queues created later and
found by the periodic discovery scan: all of their events are newer than the interest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from mailqueue.audit import AlertCallback, AuditLog, FailureAlerts, call_safely
from mailqueue.cluster import make_client
from mailqueue.errors import MailQueueError
from mailqueue.job_options import validate_queue_name
from mailqueue.settings import Settings

log = logging.getLogger(__name__)

Event = dict[str, Any]
EventCallback = Callable[[Event], Any]

_BLOCK_MS = 1000  # short enough that a newly watched queue joins the XREAD within a second
_READ_GUARD_S = 15.0  # a blocking read that outlives its BLOCK by this much means a dead link
_READ_COUNT = 500
_REPLAY_COUNT = 200
_DISCOVERY_INTERVAL_S = 2.0
# The discovery scan walks the whole keyspace (about a second per million jobs) and holds up
# the reader meanwhile: the next one waits at least this many times what the last one took.
_DISCOVERY_COST_FACTOR = 10
_SUBSCRIBER_BUFFER = 1000
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 5.0
_CLOCK_MARGIN_MS = 5  # starting a stream a few ms early beats missing an event
_JSON_FIELDS = frozenset({"returnvalue", "data"})
_INT_FIELDS = frozenset({"delay", "attemptsMade", "count"})
_PLAIN_ID = re.compile(r"^\d+(-\d+)?$")
_CURSOR_TAG = "c1."

def _now_ms() -> float:
    return time.time() * 1000


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def parse_event(queue: str, entry_id: str, fields: dict[str, str]) -> Event:
    """One events-stream entry as the dict listeners receive; JSON fields decoded."""
    event: Event = {"id": entry_id, "queue": queue}
    for key, value in fields.items():
        if key in _JSON_FIELDS:
            with contextlib.suppress(ValueError, TypeError):
                event[key] = json.loads(value)
                continue
        elif key in _INT_FIELDS and value.lstrip("-").isdigit():
            event[key] = int(value)
            continue
        event[key] = value
    event.setdefault("event", "unknown")
    return event


def _entries(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """XREAD's reply as (key, entries) pairs, for RESP2 (list) and RESP3 (dict) alike."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply  # RESP3 gives a dict
    return [(key, entries) for key, entries in pairs]


@dataclass(eq=False)
class _Listener:
    queue: str | None
    event_type: str | None
    callback: EventCallback

    def wants(self, event: Event) -> bool:
        return (self.queue is None or self.queue == event["queue"]) and (
            self.event_type is None or self.event_type == event["event"]
        )


class _Subscriber:
    """A subscription's end of the fan-out: a bounded buffer that never blocks the reader."""

    def __init__(self, queues: frozenset[str] | None) -> None:
        self.queues = queues
        self.buffer: asyncio.Queue[Event | None] = asyncio.Queue(_SUBSCRIBER_BUFFER)
        self.overflowed = False
        self.closed = False

    def offer(self, event: Event) -> None:
        if self.overflowed or (self.queues is not None and event["queue"] not in self.queues):
            return
        try:
            self.buffer.put_nowait(event)
        except asyncio.QueueFull:
            # The consumer fell behind: drop, and let it catch up from Redis (see Subscription).
            self.overflowed = True

    def discard_buffered(self) -> None:
        while not self.buffer.empty():
            self.buffer.get_nowait()


class Subscription:
    """Events as an async iterator, each carrying a `cursor` that resumes the whole stream set.

    Live events come from the EventManager's one reader (fan-out into a bounded buffer). A
    replay (resuming from `last_id`, or catching up after the buffer overflowed) reads the
    streams itself with non-blocking XREADs from its own per-stream positions: that keeps the
    reader single and free of per-subscriber state. Positions also de-duplicate the overlap
    between replay and live delivery, so nothing is missed and nothing comes twice.
    """

    def __init__(
        self, manager: EventManager, queues: list[str] | None, last_id: str | None
    ) -> None:
        self._manager = manager
        self._queues = frozenset(validate_queue_name(q) for q in queues) if queues else None
        self._created_ms = _now_ms()
        self._positions: dict[str, str] = {}
        self._floor: str | None = None  # where unseen streams start, as a stream id
        self._given_floor: str | None = None
        if last_id:
            self._parse_last_id(last_id)
        self._replaying = bool(last_id)
        self._backlog: deque[Event] = deque()
        self._closed = False
        self._sub = _Subscriber(self._queues)
        manager._attach(self._sub, self._queues)
        # A consumer that vanishes without aclose() (a dropped SSE client) must not keep its
        # place in the fan-out, nor keep its queues watched, forever.
        self._release = weakref.finalize(self, manager._detach, self._sub, self._queues)

    def _parse_last_id(self, last_id: str) -> None:
        if _PLAIN_ID.match(last_id):
            if self._queues is not None and len(self._queues) == 1:
                self._positions[next(iter(self._queues))] = last_id
            else:  # ids are times, so one id is a fair start for every stream
                self._floor = self._given_floor = last_id
            return
        try:
            if not last_id.startswith(_CURSOR_TAG):
                raise ValueError("no tag")
            raw = last_id[len(_CURSOR_TAG):]
            data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            floor, positions = f"{int(data['f'])}-0", data["p"]
            for queue, position in positions.items():
                _id_key(position)
                self._positions[str(queue)] = str(position)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MailQueueError(f"Bad event cursor {last_id!r}") from None
        self._floor = self._given_floor = floor

    @property
    def cursor(self) -> str:
        """Where this subscription stands; pass it back as `last_id` to resume."""
        floor = _id_key(self._floor_id())[0]
        raw = json.dumps({"f": floor, "p": self._positions}, separators=(",", ":"))
        return _CURSOR_TAG + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _floor_id(self) -> str:
        if self._floor is None:
            if self._manager._clock_offset_ms is None:
                return f"{int(self._created_ms) - _CLOCK_MARGIN_MS}-0"  # not memoised yet
            self._floor = f"{self._manager._to_redis_ms(self._created_ms)}-0"
        return self._floor

    def _accept(self, event: Event) -> bool:
        seen = self._positions.get(event["queue"], self._given_floor)
        if seen is not None and _id_key(event["id"]) <= _id_key(seen):
            return False
        self._positions[event["queue"]] = event["id"]
        return True

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._closed or self._sub.closed:
                raise StopAsyncIteration
            if self._backlog:
                event: Event | None = self._backlog.popleft()
            elif self._replaying or self._sub.overflowed:
                if self._sub.overflowed:
                    # Everything dropped is in Redis already: reset, then read from Redis.
                    self._sub.overflowed = False
                    self._sub.discard_buffered()
                    self._replaying = True
                await self._manager._ensure_clock()
                batch = await self._manager._replay_batch(
                    self._queues, self._positions, self._floor_id()
                )
                self._backlog.extend(batch)
                self._replaying = bool(batch)
                continue
            else:
                event = await self._sub.buffer.get()
            if event is None:
                self._closed = True
                raise StopAsyncIteration
            if self._accept(event):
                return {**event, "cursor": self.cursor}

    async def aclose(self) -> None:
        """Stop the subscription and release its place in the fan-out."""
        if not self._closed:
            self._closed = True
            self._release()
            with contextlib.suppress(asyncio.QueueFull):
                self._sub.buffer.put_nowait(None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class EventManager:
    """Listeners, subscriptions, stats, audit log and alerts over one events-stream reader."""

    def __init__(
        self, connection: dict[str, Any], client: aioredis.Redis, prefix: str, settings: Settings
    ) -> None:
        # Blocking reads must never hit a socket timeout (BULLMQ-NOTES item 1).
        self._connection = {**connection, "socket_timeout": None}
        self._client = client
        self.prefix = prefix
        self.settings = settings
        self.audit = AuditLog(client, prefix, settings)
        self.alerts = FailureAlerts(client, prefix, settings)

        self._listeners: list[_Listener] = []
        self._subscribers: set[_Subscriber] = set()
        self._audit_off: Callable[[], None] | None = None

        # What the reader watches: queues by reference count, and "all queues".
        self._queue_refs: Counter[str] = Counter()
        self._queue_since: dict[str, float] = {}
        self._global_refs = 0
        self._global_since = 0.0
        self._discovered: set[str] = set()
        self._next_scan = 0.0
        self._cursors: dict[str, str] = {}
        self._clock_offset_ms: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

        # Statistics since start.
        self._started_at = time.time()
        self._connected = False
        self._reconnects = 0
        self._last_error: str | None = None
        self._total = 0
        self._per_queue_type: dict[str, Counter[str]] = {}
        self._last_event_at: float | None = None
        self._last_event_id: str | None = None
        self._lag_last = self._lag_max = self._lag_sum = 0.0

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

    def _attach(self, sub: _Subscriber, queues: frozenset[str] | None) -> None:
        for queue in queues or (None,):
            self._add_interest(queue)
        self._subscribers.add(sub)

    def _detach(self, sub: _Subscriber, queues: frozenset[str] | None) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            for queue in queues or (None,):
                self._drop_interest(queue)

    def _add_interest(self, queue: str | None) -> None:
        if self._closed:
            raise MailQueueError("The EventManager is closed")
        if queue is None:
            if not self._global_refs:
                self._global_since = _now_ms()
                self._next_scan = 0.0
            self._global_refs += 1
        else:
            validate_queue_name(queue)
            if not self._queue_refs[queue]:
                self._queue_since[queue] = _now_ms()
            self._queue_refs[queue] += 1
        self._ensure_reader()

    def _drop_interest(self, queue: str | None) -> None:
        if queue is None:
            self._global_refs = max(0, self._global_refs - 1)
            if not self._global_refs:
                self._discovered.clear()
        else:
            self._queue_refs[queue] -= 1
            if self._queue_refs[queue] <= 0:
                del self._queue_refs[queue]
                self._queue_since.pop(queue, None)

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

    def _events_key(self, queue: str) -> str:
        return f"{self.prefix}:{queue}:events"

    def _to_redis_ms(self, local_ms: float) -> int:
        return int(local_ms + (self._clock_offset_ms or 0.0)) - _CLOCK_MARGIN_MS

    async def _measure_clock(self, conn: aioredis.Redis) -> None:
        before = _now_ms()
        seconds, micros = await conn.time()
        after = _now_ms()
        self._clock_offset_ms = seconds * 1000 + micros / 1000 - (before + after) / 2

    async def _ensure_clock(self) -> None:
        if self._clock_offset_ms is None:
            await self._measure_clock(self._client)

    async def _read_forever(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._closed:
            conn = make_client(self._connection)
            failed = False
            try:
                await self._measure_clock(conn)
                if not self._connected and self._last_error is not None:
                    log.info("Event reader reconnected to Redis")
                self._connected = True
                while not self._closed:
                    streams: dict[Any, Any] = await self._watched_streams(conn)
                    if not streams:
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), _DISCOVERY_INTERVAL_S)
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

    async def _scan_queues(self, conn: aioredis.Redis) -> set[str]:
        head = f"{self.prefix}:"
        names = set()
        async for key in conn.scan_iter(match=f"{_glob_escape(head)}*:events", count=1000):
            name = key[len(head): -len(":events")]
            if name and ":" not in name:  # a name with ':' is not a queue (BullMQ forbids it)
                names.add(name)
        return names

    async def _watched_streams(self, conn: aioredis.Redis) -> dict[str, str]:
        if self._global_refs and time.monotonic() >= self._next_scan:
            started = time.monotonic()
            self._discovered = await self._scan_queues(conn)
            finished = time.monotonic()
            self._next_scan = finished + max(_DISCOVERY_INTERVAL_S,
                                             _DISCOVERY_COST_FACTOR * (finished - started))
        wanted = set(self._queue_refs) | (self._discovered if self._global_refs else set())
        for queue in [q for q in self._cursors if q not in wanted]:
            del self._cursors[queue]
        for queue in wanted - self._cursors.keys():
            starts = [self._queue_since[queue]] if queue in self._queue_since else []
            if self._global_refs and queue in self._discovered:
                starts.append(self._global_since)
            self._cursors[queue] = f"{self._to_redis_ms(min(starts))}-0"
        return {self._events_key(q): cursor for q, cursor in self._cursors.items()}

    async def _dispatch(self, reply: Any) -> None:
        head = len(self.prefix) + 1
        for key, entries in _entries(reply):
            queue = key[head: -len(":events")]
            for entry_id, fields in entries:
                self._cursors[queue] = entry_id
                event = parse_event(queue, entry_id, fields or {})
                self._count(event)
                for sub in list(self._subscribers):
                    sub.offer(event)
                await self.alerts.watch(event)
                for listener in list(self._listeners):
                    if listener.wants(event):
                        await call_safely(listener.callback, dict(event), "Event listener")

    def _count(self, event: Event) -> None:
        now = _now_ms()
        lag = max(0.0, now + (self._clock_offset_ms or 0.0) - _id_key(event["id"])[0])
        self._total += 1
        self._per_queue_type.setdefault(event["queue"], Counter())[event["event"]] += 1
        self._last_event_at = now / 1000
        self._last_event_id = event["id"]
        self._lag_last = lag
        self._lag_max = max(self._lag_max, lag)
        self._lag_sum += lag
        if event["event"] == "added" and event.get("name"):
            self.alerts.remember_job_name(event["queue"], str(event.get("jobId")),
                                          str(event["name"]))

    async def _replay_batch(
        self, queues: frozenset[str] | None, positions: dict[str, str], floor: str
    ) -> list[Event]:
        """The next events after `positions` (else `floor`) in the given queues' streams."""
        names = set(queues) if queues is not None else (
            await self._scan_queues(self._client) | set(positions)
        )
        if not names:
            return []
        streams: dict[Any, Any] = {
            self._events_key(q): positions.get(q, floor) for q in sorted(names)
        }
        reply = await self._client.xread(streams, count=_REPLAY_COUNT)
        head = len(self.prefix) + 1
        events = [
            parse_event(key[head: -len(":events")], entry_id, fields or {})
            for key, entries in _entries(reply) for entry_id, fields in entries
        ]
        events.sort(key=lambda e: _id_key(e["id"]))
        return events

    async def get_event_stats(self) -> dict[str, Any]:
        """Events seen since start: per queue, per type, total; reader lag and connection."""
        per_type: Counter[str] = Counter()
        for counts in self._per_queue_type.values():
            per_type.update(counts)
        return {
            "started_at": self._started_at,
            "total": self._total,
            "per_queue": {q: sum(c.values()) for q, c in sorted(self._per_queue_type.items())},
            "per_type": dict(sorted(per_type.items())),
            "per_queue_type": {q: dict(c) for q, c in sorted(self._per_queue_type.items())},
            "last_event_at": self._last_event_at,
            "last_event_id": self._last_event_id,
            "lag_ms": {
                "last": round(self._lag_last, 1),
                "max": round(self._lag_max, 1),
                "avg": round(self._lag_sum / self._total, 1) if self._total else 0.0,
            },
            "connected": self._connected,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
            "watched_queues": sorted(self._cursors),
            "listeners": len(self._listeners),
            "subscribers": len(self._subscribers),
        }

    # --- audit log and alerts (mailqueue/audit.py) -----------------------------------------

    async def setup_audit_listeners(self) -> None:
        """Record job lifecycle events (completed, failed, stalled, retries-exhausted) too."""
        if self._audit_off is None:
            self._audit_off = self.on_event(None, None, self.audit.record_job_event)

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
        """The newest `n` events across `queues` (None: every queue), newest first.

        Reads each stream's tail with XREVRANGE (at most `n` entries per stream, or a bounded
        multiple of it when filtering by type), then merges by stream id.
        """
        if n <= 0:
            return []
        names = sorted({validate_queue_name(q) for q in queues} if queues
                       else await self._scan_queues(self._client))
        per_stream = n if event_type is None else min(n * 20, 10_000)
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.xrevrange(self._events_key(name), "+", "-", count=per_stream)
        replies: list[Any] = await pipe.execute() if names else []
        events = [
            parse_event(name, entry_id, fields or {})
            for name, entries in zip(names, replies, strict=True)
            for entry_id, fields in entries
        ]
        if event_type:
            events = [e for e in events if e["event"] == event_type]
        events.sort(key=lambda e: _id_key(e["id"]), reverse=True)
        return events[:n]


__all__ = ["EventManager", "Subscription", "parse_event"]
