"""The operator controls Bull Board has and the dashboard lacked (issue 14): a queue's global
concurrency and rate limit, a delayed job's delay and a job's priority, a job scheduler edited
in place with a preview of its next runs, and the newest jobs of a queue whatever their state.

Mixed into QueueManager (it lends `key`, `get_queue` and the job reads). Every write is what
BullMQ (Node 6 or Python 3.4.4) writes: the global limits are fields of the queue's `meta`
hash (`concurrency`; `max` and `duration`), read by moveToActive and moveToFinished of every
worker, Node's and ours alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

import redis.asyncio as aioredis
from bullmq import Queue

from mailqueue.errors import (
    MailQueueError,
)

MAX_CONCURRENCY = 1_000_000
MAX_DURATION_MS = 7 * 24 * 3600 * 1000


class RateLimit(TypedDict):
    max: int
    duration_ms: int


class QueueLimits(TypedDict):
    """A queue's global limits; None where none is set."""

    concurrency: int | None
    rate_limit: RateLimit | None


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise MailQueueError(f"{what} must be a whole number")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise MailQueueError(f"{what} must be a whole number, not {value!r}") from None
    if isinstance(value, float) and value != number:
        raise MailQueueError(f"{what} must be a whole number, not {value!r}")
    if not low <= number <= high:
        raise MailQueueError(f"{what} must be within {low:,}..{high:,}")
    return number


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _int_or_none(value: Any) -> int | None:
    text = _text(value)
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


class QueueControls:
    """Limits, delay and priority changes, scheduler edits and the "latest" listing."""

    _client: aioredis.Redis

    if TYPE_CHECKING:
        def key(self, queue: str, *parts: str) -> str: ...
        async def get_queue(self, name: str) -> Queue: ...

    # --- global concurrency and rate limit --------------------------------------------------

    async def get_limits(self, queue: str) -> QueueLimits:
        """The queue's global concurrency and rate limit (None where none is set)."""
        await self.get_queue(queue)
        concurrency, max_jobs, duration = await self._client.hmget(
            self.key(queue, "meta"), ["concurrency", "max", "duration"])
        limit_max, limit_ms = _int_or_none(max_jobs), _int_or_none(duration)
        rate: RateLimit | None = None
        if limit_max is not None and limit_ms is not None:
            rate = {"max": limit_max, "duration_ms": limit_ms}
        return {"concurrency": _int_or_none(concurrency), "rate_limit": rate}

    async def set_global_concurrency(self, queue: str, concurrency: Any) -> int:
        """At most `concurrency` jobs of the queue active at once, across every worker."""
        n = _whole(concurrency, "The global concurrency", 1, MAX_CONCURRENCY)
        q = await self.get_queue(queue)
        await q.setGlobalConcurrency(n)
        return n

    async def remove_global_concurrency(self, queue: str) -> bool:
        q = await self.get_queue(queue)
        return bool(await q.removeGlobalConcurrency())

    async def set_global_rate_limit(self, queue: str, max_jobs: Any, duration_ms: Any
                                    ) -> RateLimit:
        """At most `max_jobs` jobs started per `duration_ms`, across every worker."""
        n = _whole(max_jobs, "The rate limit's number of jobs", 1, MAX_CONCURRENCY)
        ms = _whole(duration_ms, "The rate limit's duration (ms)", 1, MAX_DURATION_MS)
        q = await self.get_queue(queue)
        await q.setGlobalRateLimit(n, ms)
        return {"max": n, "duration_ms": ms}

    async def remove_global_rate_limit(self, queue: str) -> bool:
        q = await self.get_queue(queue)
        return bool(await q.removeGlobalRateLimit())
