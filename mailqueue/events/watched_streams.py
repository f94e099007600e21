"""Which events streams the reader (reader.py) watches, and where each one starts.

Interest is counted per queue (listeners and subscriptions of one queue) and for "all
queues" (found by a periodic discovery scan). A watched stream starts at the moment interest
in it began, expressed as a stream id on Redis's clock: XREAD's "$" taken at the right
instant, which also covers queues created later and found by the scan, since all of their
events are newer than the interest. Each stream's cursor then follows what was read.
"""

from __future__ import annotations

import time
from collections import Counter

import redis.asyncio as aioredis

from mailqueue.events.streams import events_key, now_ms, scan_queues
from mailqueue.events.subscriptions import CLOCK_MARGIN_MS
from mailqueue.job_options import validate_queue_name

DISCOVERY_INTERVAL_S = 2.0
# The discovery scan walks the whole keyspace (about a second per million jobs) and holds up
# the reader meanwhile: the next one waits at least this many times what the last one took.
_DISCOVERY_COST_FACTOR = 10


class WatchedStreams:
    """The queues of interest, their streams' cursors, and Redis's clock offset."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._queue_refs: Counter[str] = Counter()
        self._queue_since: dict[str, float] = {}
        self._global_refs = 0
        self._global_since = 0.0
        self._discovered: set[str] = set()
        self._next_scan = 0.0
        self._cursors: dict[str, str] = {}
        self.clock_offset_ms: float | None = None  # Redis's clock minus ours, once measured

    def add(self, queue: str | None) -> None:
        """One more listener or subscription of `queue` (None: every queue)."""
        if queue is None:
            if not self._global_refs:
                self._global_since = now_ms()
                self._next_scan = 0.0
            self._global_refs += 1
        else:
            validate_queue_name(queue)
            if not self._queue_refs[queue]:
                self._queue_since[queue] = now_ms()
            self._queue_refs[queue] += 1

    def drop(self, queue: str | None) -> None:
        if queue is None:
            self._global_refs = max(0, self._global_refs - 1)
            if not self._global_refs:
                self._discovered.clear()
        else:
            self._queue_refs[queue] -= 1
            if self._queue_refs[queue] <= 0:
                del self._queue_refs[queue]
                self._queue_since.pop(queue, None)

    @property
    def queues(self) -> list[str]:
        """The queues whose streams the reader reads now."""
        return sorted(self._cursors)

    def to_redis_ms(self, local_ms: float) -> int:
        return int(local_ms + (self.clock_offset_ms or 0.0)) - CLOCK_MARGIN_MS

    async def measure_clock(self, conn: aioredis.Redis) -> None:
        before = now_ms()
        seconds, micros = await conn.time()
        after = now_ms()
        self.clock_offset_ms = seconds * 1000 + micros / 1000 - (before + after) / 2

    async def scan(self, conn: aioredis.Redis) -> set[str]:
        return await scan_queues(conn, self.prefix)

    async def streams(self, conn: aioredis.Redis) -> dict[str, str]:
        """The XREAD argument: each watched stream's key and the id to read after."""
        if self._global_refs and time.monotonic() >= self._next_scan:
            started = time.monotonic()
            self._discovered = await self.scan(conn)
            finished = time.monotonic()
            self._next_scan = finished + max(DISCOVERY_INTERVAL_S,
                                             _DISCOVERY_COST_FACTOR * (finished - started))
        wanted = set(self._queue_refs) | (self._discovered if self._global_refs else set())
        for queue in [q for q in self._cursors if q not in wanted]:
            del self._cursors[queue]
        for queue in wanted - self._cursors.keys():
            starts = [self._queue_since[queue]] if queue in self._queue_since else []
            if self._global_refs and queue in self._discovered:
                starts.append(self._global_since)
            self._cursors[queue] = f"{self.to_redis_ms(min(starts))}-0"
        return {events_key(self.prefix, q): cursor for q, cursor in self._cursors.items()}

    def advance(self, queue: str, entry_id: str) -> None:
        """`queue`'s stream was read up to `entry_id`."""
        self._cursors[queue] = entry_id
