"""The operator controls Bull Board has and the dashboard lacked (issue 14): a queue's global
concurrency and rate limit, a delayed job's delay and a job's priority, a job scheduler edited
in place with a preview of its next runs, and the newest jobs of a queue whatever their state.

Mixed into QueueManager (it lends `key`, `get_queue` and the job reads). Every write is what
BullMQ (Node 6 or Python 3.4.4) writes: the global limits are fields of the queue's `meta`
hash (`concurrency`; `max` and `duration`), read by moveToActive and moveToFinished of every
worker, Node's and ours alike.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

import redis.asyncio as aioredis
from bullmq import Queue

from mailqueue.errors import (
    InvalidScheduleError,
    JobNotFoundError,
    JobStateError,
    MailQueueError,
)

if TYPE_CHECKING:
    from mailqueue.types import ScheduleInfo

# The newest jobs of a queue: this many of each state are read, then merged by timestamp.
LATEST_PER_STATE = 50
# The states "latest" merges, as bullmq names the lists and sets that hold them.
LATEST_STATES = ("active", "waiting", "paused", "prioritized", "delayed", "waiting-children",
                 "completed", "failed")
MAX_CONCURRENCY = 1_000_000
MAX_DURATION_MS = 7 * 24 * 3600 * 1000
MAX_DELAY_MS = 10 * 365 * 24 * 3600 * 1000
MAX_PRIORITY = 2_097_152  # BullMQ's limit (2^21)
PREVIEW_RUNS = 5


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


def next_runs(cron: str | None = None, every_ms: int | None = None, tz: str | None = None,
              count: int = PREVIEW_RUNS, now_ms: int | None = None) -> list[int]:
    """The next `count` runs (epoch ms) of a cron pattern (with its time zone) or an interval,
    computed as bullmq computes them: croniter through bullmq's own repeat strategy (6 fields:
    seconds first); an `every` lines up on multiples of the interval. InvalidScheduleError,
    one line, for a pattern, interval or zone that cannot be scheduled."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from bullmq.job_scheduler import default_repeat_strategy

    now = int(time.time() * 1000) if now_ms is None else now_ms
    if (cron is None) == (every_ms is None):
        raise InvalidScheduleError("Give a cron pattern or an interval, not both")
    if tz:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidScheduleError(f"Unknown time zone {tz!r}") from None
    if every_ms is not None:
        if every_ms <= 0:
            raise InvalidScheduleError("The interval must be a positive number of ms")
        first = (now // every_ms) * every_ms + every_ms
        return [first + i * every_ms for i in range(count)]
    assert cron is not None
    if len(cron.split()) not in (5, 6):
        raise InvalidScheduleError(
            f"Bad cron pattern {cron!r}: expected 5 fields (min hour day month weekday) or 6")
    runs: list[int] = []
    base = now
    try:
        for _ in range(count):
            nxt = default_repeat_strategy(base, {"pattern": cron, "tz": tz})
            if nxt is None:
                break
            runs.append(int(nxt))
            base = int(nxt)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InvalidScheduleError(f"Bad cron pattern {cron!r}: {reason}") from None
    return runs


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class QueueControls:
    """Limits, delay and priority changes, scheduler edits and the "latest" listing."""

    _client: aioredis.Redis

    if TYPE_CHECKING:
        def key(self, queue: str, *parts: str) -> str: ...
        async def get_queue(self, name: str) -> Queue: ...
        async def _job_state(self, q: Queue, job_id: str) -> str: ...
        async def _read_summaries(self, queue: str, ids: list[str],
                                  state: str | None) -> list[dict[str, Any]]: ...
        async def list_schedules(self, queue: str | None = None) -> list[ScheduleInfo]: ...
        async def schedule_job(
            self, queue: str, name: str, data: Any = None, *, cron: str | None = None,
            every_ms: int | None = None, tz: str | None = None,
            scheduler_id: str | None = None, limit: int | None = None,
            opts: dict[str, Any] | None = None) -> ScheduleInfo: ...

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

    # --- one job: delay and priority ------------------------------------------------------

    async def change_delay(self, queue: str, job_id: str, delay_ms: Any) -> int:
        """Run the delayed job `delay_ms` from now (bullmq's Job.changeDelay, whose script
        Python's bullmq ships without the method). JobStateError unless the job is delayed."""
        ms = _whole(delay_ms, "The delay (ms)", 0, MAX_DELAY_MS)
        q = await self.get_queue(queue)
        keys = [self.key(queue, "delayed"), self.key(queue, "meta"),
                self.key(queue, "marker"), self.key(queue, "events")]
        args = [ms, str(int(time.time() * 1000)), job_id, self.key(queue, job_id)]
        result = await _change_delay_script(q)(keys=keys, args=args)
        if result == -1:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        if result == -3:
            state = await self._job_state(q, job_id)
            raise JobStateError(f"Job {job_id!r} is {state}; only a delayed job's delay "
                                "can change")
        return ms

    async def change_priority(self, queue: str, job_id: str, priority: Any,
                              lifo: bool = False) -> int:
        """Give a waiting or prioritized job another priority (0: none; 1 is the highest);
        bullmq's Job.changePriority. JobStateError for a job in another state (bullmq would
        only rewrite the number there, which changes nothing)."""
        n = _whole(priority, "The priority", 0, MAX_PRIORITY)
        q = await self.get_queue(queue)
        state = await self._job_state(q, job_id)
        if state == "unknown":
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        if state not in ("waiting", "prioritized", "paused"):
            raise JobStateError(f"Job {job_id!r} is {state}; only a waiting or prioritized "
                                "job's priority can change")
        job = await q.getJob(job_id)
        if job is None:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        try:
            await job.changePriority({"priority": n, "lifo": lifo})
        except Exception as exc:  # bullmq raises a bare Exception with its own message
            raise MailQueueError(f"Cannot change the priority of job {job_id!r}: {exc}"
                                 ) from None
        return n

    # --- job schedulers -------------------------------------------------------------------

    async def update_schedule(self, queue: str, scheduler_id: str, *, cron: str | None = None,
                              every_ms: int | None = None, tz: str | None = None,
                              data: Any = None) -> ScheduleInfo:
        """Change a job scheduler's pattern or interval, time zone and data: upserted under
        the same id, with its job name, limit and job options kept."""
        for schedule in await self.list_schedules(queue):
            if schedule["id"] == scheduler_id:
                break
        else:
            raise JobNotFoundError(f"No job scheduler {scheduler_id!r} in queue {queue!r}")
        next_runs(cron, every_ms, tz, count=1)  # the one-line reason before bullmq's
        template = schedule["template"] or {}
        opts = {k: v for k, v in dict(template.get("opts") or {}).items()
                if k not in _TEMPLATE_ONLY_OPTIONS}
        return await self.schedule_job(
            queue, schedule["name"], template.get("data") if data is None else data,
            cron=cron, every_ms=every_ms, tz=tz or None, scheduler_id=scheduler_id,
            limit=schedule["limit"], opts=opts)

    # --- the newest jobs, whatever their state ----------------------------------------------

    async def get_latest_jobs(self, queue: str, limit: int = LATEST_PER_STATE
                              ) -> list[dict[str, Any]]:
        """The newest `limit` jobs of the queue by creation time, across states: the newest
        `limit` ids of each state's list or set (bounded reads, whatever the queue's size),
        their summaries, merged newest first. Each row says its state."""
        from mailqueue.job_reads import listed_state

        limit = max(1, min(limit, 500))
        q = await self.get_queue(queue)

        async def newest(state: str) -> tuple[str, list[str]]:
            listed = await listed_state(q, state)
            if listed is None:
                return state, []
            raw = await q.backend.getRanges([listed], 0, limit - 1, False)
            return state, [i.decode() if isinstance(i, bytes) else str(i) for i in raw]

        found = await asyncio.gather(*(newest(s) for s in LATEST_STATES))
        seen: set[str] = set()
        rows: list[dict[str, Any]] = []
        for state, ids in found:
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            rows += await self._read_summaries(queue, fresh, state)
        rows.sort(key=lambda r: (int(r.get("timestamp") or 0), str(r.get("id"))), reverse=True)
        return rows[:limit]


def _change_delay_script(q: Queue) -> Any:
    """bullmq's changeDelay script (shipped, not registered by bullmq 3.4.4), on the queue's
    connection; registered once per queue handle."""
    script = getattr(q, "_mailqueue_change_delay", None)
    if script is None:
        from bullmq.redis_connection import loadScript

        script = q.client.register_script(loadScript("changeDelay-4.lua"))
        q._mailqueue_change_delay = script
    return script


# A scheduler's template options that belong to one run, not to the scheduler.
_TEMPLATE_ONLY_OPTIONS = frozenset({"repeat", "jobId", "repeatJobKey", "delay", "prevMillis",
                                    "timestamp"})
