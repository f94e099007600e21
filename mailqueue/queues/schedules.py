"""Job schedulers (BullMQ's recurring jobs): made, listed, edited, run now, removed, and the
preview of their next runs computed as bullmq computes them."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bullmq import Job
from bullmq.job_scheduler import default_repeat_strategy
from croniter import croniter

from mailqueue.errors import InvalidScheduleError, JobNotFoundError
from mailqueue.job_options import validate_job_options
from mailqueue.queues.handles import QueueHandles
from mailqueue.queues.job_writes import check_json, merged_options
from mailqueue.types import ScheduleInfo

PREVIEW_RUNS = 5

# A scheduler's template options that belong to one run (or to the scheduler), not to a
# one-off job made from the template, nor to the template kept when the scheduler changes.
_RUN_ONLY_OPTIONS = frozenset({"repeat", "jobId", "repeatJobKey", "delay", "prevMillis",
                               "timestamp"})


class Schedules:
    """The job schedulers of every queue under the prefix."""

    def __init__(self, handles: QueueHandles) -> None:
        self._handles = handles

    async def schedule_job(
        self, queue: str, name: str, data: Any = None, *, cron: str | None = None,
        every_ms: int | None = None, tz: str | None = None, scheduler_id: str | None = None,
        limit: int | None = None, opts: dict[str, Any] | None = None,
    ) -> ScheduleInfo:
        if (cron is None) == (every_ms is None):
            raise InvalidScheduleError("Give exactly one of cron=... or every=...")
        repeat: dict[str, Any] = {}
        if cron is not None:
            _validate_cron(cron)
            repeat["pattern"] = cron
        else:
            if not isinstance(every_ms, int) or isinstance(every_ms, bool) or every_ms <= 0:
                raise InvalidScheduleError(
                    f"every must be a positive number of ms, not {every_ms!r}"
                )
            repeat["every"] = every_ms
        if tz:
            _validate_tz(tz)
            repeat["tz"] = tz
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise InvalidScheduleError(f"limit must be a whole number >= 1, not {limit!r}")
            repeat["limit"] = limit
        validate_job_options(opts or {})
        check_json(data)
        q = self._handles.handle(queue)
        sid = scheduler_id or name
        try:
            await q.upsertJobScheduler(sid, repeat, name, data if data is not None else {},
                                       merged_options(q, opts))
        except InvalidScheduleError:
            raise
        except Exception as exc:
            raise InvalidScheduleError(f"Cannot schedule {sid!r}: {exc}") from None
        self._handles.discovery.note(queue, True)
        return await self._find(queue, sid)

    async def list_schedules(self, queue: str | None = None) -> list[ScheduleInfo]:
        """Schedules of one queue, or of every queue."""
        names = [queue] if queue is not None else await self._handles.discovery.list_queues()
        result: list[ScheduleInfo] = []
        for name in names:
            q = await self._handles.get_queue(name)
            for raw in await q.getJobSchedulers(0, -1, True):
                if raw:
                    result.append(_schedule_info(name, raw))
        return result

    async def remove_schedule(self, queue: str, scheduler_id: str) -> bool:
        q = await self._handles.get_queue(queue)
        if not await q.isJobScheduler(scheduler_id):
            return False
        await q.removeJobScheduler(scheduler_id)
        return True

    async def update_schedule(self, queue: str, scheduler_id: str, *, cron: str | None = None,
                              every_ms: int | None = None, tz: str | None = None,
                              data: Any = None) -> ScheduleInfo:
        """Change a job scheduler's pattern or interval, time zone and data: upserted under
        the same id, with its job name, limit and job options kept."""
        schedule = await self._find(queue, scheduler_id)
        next_runs(cron, every_ms, tz, count=1)  # the one-line reason before bullmq's
        template = schedule["template"] or {}
        return await self.schedule_job(
            queue, schedule["name"], template.get("data") if data is None else data,
            cron=cron, every_ms=every_ms, tz=tz or None, scheduler_id=scheduler_id,
            limit=schedule["limit"], opts=_template_options(template))

    async def run_schedule_now(self, queue: str, scheduler_id: str) -> Job:
        """Add one job from a scheduler's template now; the schedule itself is unchanged.

        The job gets its own id (not the scheduler's), so it never collides with the next
        scheduled run.
        """
        schedule = await self._find(queue, scheduler_id)
        template = schedule["template"] or {}
        return await self._handles.handle(queue).add(
            schedule["name"], template.get("data") or {}, _template_options(template))

    async def _find(self, queue: str, scheduler_id: str) -> ScheduleInfo:
        for schedule in await self.list_schedules(queue):
            if schedule["id"] == scheduler_id:
                return schedule
        raise JobNotFoundError(f"No job scheduler {scheduler_id!r} in queue {queue!r}")


def next_runs(cron: str | None = None, every_ms: int | None = None, tz: str | None = None,
              count: int = PREVIEW_RUNS, now_ms: int | None = None) -> list[int]:
    """The next `count` runs (epoch ms) of a cron pattern (with its time zone) or an interval,
    computed as bullmq computes them: croniter through bullmq's own repeat strategy (6 fields:
    seconds first); an `every` lines up on multiples of the interval. InvalidScheduleError,
    one line, for a pattern, interval or zone that cannot be scheduled."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if (cron is None) == (every_ms is None):
        raise InvalidScheduleError("Give a cron pattern or an interval, not both")
    if tz:
        _validate_tz(tz)
    if every_ms is not None:
        if every_ms <= 0:
            raise InvalidScheduleError("The interval must be a positive number of ms")
        first = (now // every_ms) * every_ms + every_ms
        return [first + i * every_ms for i in range(count)]
    assert cron is not None
    _check_fields(cron)
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


def _template_options(template: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dict(template.get("opts") or {}).items()
            if k not in _RUN_ONLY_OPTIONS}


def _check_fields(pattern: str) -> None:
    if not isinstance(pattern, str) or len(pattern.split()) not in (5, 6):
        raise InvalidScheduleError(
            f"Bad cron pattern {pattern!r}: expected 5 fields (min hour day month weekday) or 6"
        )


def _validate_cron(pattern: str) -> None:
    _check_fields(pattern)
    try:
        # Like bullmq (and Node's cron-parser), a 6-field pattern has the seconds first.
        croniter(pattern, second_at_beginning=True)
    except Exception as exc:
        raise InvalidScheduleError(f"Bad cron pattern {pattern!r}: {exc}") from None


def _validate_tz(tz: str) -> None:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(f"Unknown time zone {tz!r}") from None


def _schedule_info(queue: str, raw: dict[str, Any]) -> ScheduleInfo:
    template = raw.get("template") or {}
    next_run = raw.get("next")
    return {
        "queue": queue,
        "id": str(raw.get("key")),
        "name": str(raw.get("name") or raw.get("key")),
        "cron": raw.get("pattern"),
        "every_ms": raw.get("every"),
        "tz": raw.get("tz"),
        "next_run": int(next_run) if next_run is not None and not math.isnan(float(next_run))
        else None,
        "iteration_count": raw.get("iterationCount"),
        "limit": raw.get("limit"),
        "template": template,
    }
