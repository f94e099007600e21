"""Listeners and subscriptions: how events from the EventManager's one reader reach callers.

A subscription's live events come from the reader's fan-out into a bounded buffer; replays
(resuming from a cursor, or catching up after the buffer overflowed) read Redis directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from mailqueue.errors import MailQueueError
from mailqueue.events.streams import Event, EventCallback, id_key, now_ms
from mailqueue.job_options import validate_queue_name

SUBSCRIBER_BUFFER = 1000
CLOCK_MARGIN_MS = 5  # starting a stream a few ms early beats missing an event
_PLAIN_ID = re.compile(r"^\d+(-\d+)?$")
_CURSOR_TAG = "c1."


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
        self.buffer: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_BUFFER)
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


class EventSource(Protocol):
    """What a subscription needs of the reader (mailqueue.events.reader.EventManager)."""

    def attach(self, sub: _Subscriber, queues: frozenset[str] | None) -> None: ...

    def detach(self, sub: _Subscriber, queues: frozenset[str] | None) -> None: ...

    def redis_ms(self, local_ms: float) -> int | None: ...

    async def ensure_clock(self) -> None: ...

    async def replay_batch(self, queues: frozenset[str] | None, positions: dict[str, str],
                           floor: str) -> list[Event]: ...


class Subscription:
    """Events as an async iterator, each carrying a `cursor` that resumes the whole stream set.

    Live events come from the EventManager's one reader (fan-out into a bounded buffer). A
    replay (resuming from `last_id`, or catching up after the buffer overflowed) reads the
    streams itself with non-blocking XREADs from its own per-stream positions: that keeps the
    reader single and free of per-subscriber state. Positions also de-duplicate the overlap
    between replay and live delivery, so nothing is missed and nothing comes twice.
    """

    def __init__(
        self, manager: EventSource, queues: list[str] | None, last_id: str | None
    ) -> None:
        self._manager = manager
        self._queues = frozenset(validate_queue_name(q) for q in queues) if queues else None
        self._created_ms = now_ms()
        self._positions: dict[str, str] = {}
        self._floor: str | None = None  # where unseen streams start, as a stream id
        self._given_floor: str | None = None
        if last_id:
            self._parse_last_id(last_id)
        self._replaying = bool(last_id)
        self._backlog: deque[Event] = deque()
        self._closed = False
        self._sub = _Subscriber(self._queues)
        manager.attach(self._sub, self._queues)
        # A consumer that vanishes without aclose() (a dropped SSE client) must not keep its
        # place in the fan-out, nor keep its queues watched, forever.
        self._release = weakref.finalize(self, manager.detach, self._sub, self._queues)

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
                id_key(position)
                self._positions[str(queue)] = str(position)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MailQueueError(f"Bad event cursor {last_id!r}") from None
        self._floor = self._given_floor = floor

    @property
    def cursor(self) -> str:
        """Where this subscription stands; pass it back as `last_id` to resume."""
        floor = id_key(self._floor_id())[0]
        raw = json.dumps({"f": floor, "p": self._positions}, separators=(",", ":"))
        return _CURSOR_TAG + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _floor_id(self) -> str:
        if self._floor is None:
            redis_ms = self._manager.redis_ms(self._created_ms)
            if redis_ms is None:
                return f"{int(self._created_ms) - CLOCK_MARGIN_MS}-0"  # not memoised yet
            self._floor = f"{redis_ms}-0"
        return self._floor

    def _accept(self, event: Event) -> bool:
        seen = self._positions.get(event["queue"], self._given_floor)
        if seen is not None and id_key(event["id"]) <= id_key(seen):
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
                await self._manager.ensure_clock()
                batch = await self._manager.replay_batch(
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
