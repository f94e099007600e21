"""What holds a queue back, read from BullMQ's own keys: a rate limit in force and job
schedulers whose next run is long past. (Waiting jobs with no worker come from the counts
and CLIENT LIST, which the callers already read.)

One pipeline for any number of queues.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

import redis.asyncio as aioredis

from mailqueue.keys import Keys

# A job scheduler whose next run is more than this far in the past is overdue: its next job
# is added only when the previous one is taken, so no worker (or a paused queue) stops it.
OVERDUE_AFTER_MS = 60_000
# Queue.rateLimit(ms) writes the limiter with Number.MAX_SAFE_INTEGER: "no job until then".
MANUAL_RATE_LIMIT = 2 ** 53 - 1


class RateLimitAlert(TypedDict):
    ttl_ms: int
    count: int
    max: int | None
    manual: bool  # set by Queue.rateLimit, not by the queue's global limit


class OverdueAlert(TypedDict):
    count: int
    id: str  # the oldest overdue scheduler
    next_run: int


class QueueAlert(TypedDict):
    rate_limit: RateLimitAlert | None
    overdue_schedules: OverdueAlert | None


class QueueAlerts:
    """What holds back each of many queues, in one round trip."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def get_queue_alerts(self, names: list[str], now_ms: int | None = None
                               ) -> dict[str, QueueAlert]:
        """Per queue: `rate_limit` and `overdue_schedules`, each None when all is well.

        - `rate_limit` {ttl_ms, count, max, manual}: the queue is rate-limited as BullMQ's
          `Queue.getRateLimitTtl` says it: with a global limit (`max` in the meta hash), while
          the `limiter` key's count has reached it; without one, while the key lives. `manual`
          when `Queue.rateLimit` set it.
        - `overdue_schedules` {count, id, next_run}: job schedulers whose next run is more than
          OVERDUE_AFTER_MS in the past (`id` and `next_run` of the oldest).
        """
        now = int(time.time() * 1000) if now_ms is None else now_ms
        overdue_before = now - OVERDUE_AFTER_MS
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            keys = Keys(self._prefix, name)
            pipe.get(keys.limiter)
            pipe.pttl(keys.limiter)
            pipe.hget(keys.meta, "max")
            repeat = keys.repeat
            pipe.zrangebyscore(repeat, "-inf", overdue_before, start=0, num=1, withscores=True)
            pipe.zcount(repeat, "-inf", overdue_before)
        # A key of another type where BullMQ's should be (a foreign app's) reads as absent.
        replies = await pipe.execute(raise_on_error=False) if names else []
        alerts: dict[str, QueueAlert] = {}
        for i, name in enumerate(names):
            count, ttl, max_jobs, oldest, overdue = (
                None if isinstance(r, Exception) else r for r in replies[i * 5:i * 5 + 5])
            alerts[name] = {"rate_limit": _rate_limit(count, ttl, max_jobs),
                            "overdue_schedules": _overdue(oldest, overdue)}
        return alerts


def _number(value: Any) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _rate_limit(count: Any, ttl: Any, max_jobs: Any) -> RateLimitAlert | None:
    ttl_ms, used, limit = _number(ttl), _number(count) or 0, _number(max_jobs)
    if ttl_ms is None or ttl_ms <= 0:
        return None
    if limit is not None and used < limit:
        return None
    return {"ttl_ms": ttl_ms, "count": used, "max": limit,
            "manual": used >= MANUAL_RATE_LIMIT}


def _overdue(oldest: Any, overdue: Any) -> OverdueAlert | None:
    if not overdue or not oldest:
        return None
    member, score = oldest[0]
    member = member.decode() if isinstance(member, bytes) else str(member)
    return {"count": int(overdue), "id": member, "next_run": int(score)}
