"""A queue's global concurrency and rate limit, as BullMQ (Node 6 or Python 3.4.4) keeps them:
fields of the queue's `meta` hash (`concurrency`; `max` and `duration`), read by moveToActive
and moveToFinished of every worker, Node's and ours alike."""

from __future__ import annotations

from typing import Any, TypedDict

import redis.asyncio as aioredis

from mailqueue.job_options import whole_number
from mailqueue.queues.handles import QueueHandles

MAX_CONCURRENCY = 1_000_000
MAX_DURATION_MS = 7 * 24 * 3600 * 1000


class RateLimit(TypedDict):
    max: int
    duration_ms: int


class QueueLimits(TypedDict):
    """A queue's global limits; None where none is set."""

    concurrency: int | None
    rate_limit: RateLimit | None


class QueueLimiter:
    """Reads and sets the limits that hold across every worker of a queue."""

    def __init__(self, client: aioredis.Redis, handles: QueueHandles) -> None:
        self._client = client
        self._handles = handles

    async def get_limits(self, queue: str) -> QueueLimits:
        """The queue's global concurrency and rate limit (None where none is set)."""
        await self._handles.get_queue(queue)
        concurrency, max_jobs, duration = await self._client.hmget(
            self._handles.keys(queue).meta, ["concurrency", "max", "duration"])
        limit_max, limit_ms = _int_or_none(max_jobs), _int_or_none(duration)
        rate: RateLimit | None = None
        if limit_max is not None and limit_ms is not None:
            rate = {"max": limit_max, "duration_ms": limit_ms}
        return {"concurrency": _int_or_none(concurrency), "rate_limit": rate}

    async def set_global_concurrency(self, queue: str, concurrency: Any) -> int:
        """At most `concurrency` jobs of the queue active at once, across every worker."""
        n = whole_number(concurrency, "The global concurrency", 1, MAX_CONCURRENCY)
        q = await self._handles.get_queue(queue)
        await q.setGlobalConcurrency(n)
        return n

    async def remove_global_concurrency(self, queue: str) -> bool:
        q = await self._handles.get_queue(queue)
        return bool(await q.removeGlobalConcurrency())

    async def set_global_rate_limit(self, queue: str, max_jobs: Any, duration_ms: Any
                                    ) -> RateLimit:
        """At most `max_jobs` jobs started per `duration_ms`, across every worker."""
        n = whole_number(max_jobs, "The rate limit's number of jobs", 1, MAX_CONCURRENCY)
        ms = whole_number(duration_ms, "The rate limit's duration (ms)", 1, MAX_DURATION_MS)
        q = await self._handles.get_queue(queue)
        await q.setGlobalRateLimit(n, ms)
        return {"max": n, "duration_ms": ms}

    async def remove_global_rate_limit(self, queue: str) -> bool:
        q = await self._handles.get_queue(queue)
        return bool(await q.removeGlobalRateLimit())


def _int_or_none(value: Any) -> int | None:
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return int(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None
