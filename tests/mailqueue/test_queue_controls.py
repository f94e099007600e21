"""mailqueue/queues/limits.py, job_writes.py and schedules.py against the suite's Redis: the
global concurrency is obeyed by two workers of either runtime (native and bullmq's loop), the
newest jobs across states, and the preview of a scheduler's next runs."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from bullmq import Job

from mailqueue.errors import InvalidScheduleError
from mailqueue.queues.schedules import next_runs
from mailqueue.settings import Settings
from tests.mailqueue.conftest import open_stack, wait_for_counts


async def _max_active(settings: Settings, redis_url: str, runtime: str, limit: int | None,
                      jobs: int = 8) -> tuple[int, int, float]:
    """Run `jobs` jobs on two workers (concurrency 4 each) with the queue's global concurrency
    `limit`; the most jobs seen active at once, by the handlers themselves and by sampling
    Redis's active list while they run, and how long the jobs took (s)."""
    settings = settings.model_copy(update={"worker_runtime": runtime})
    queue = f"gc-{runtime}-{limit}"
    async with open_stack(settings, redis_url) as stack:
        await stack.queues.create_queue(queue)
        if limit is not None:
            await stack.queues.set_global_concurrency(queue, limit)
        running = 0
        most = 0
        sampled = 0
        ticks = asyncio.Condition()
        tick = 0

        async def handler(data: Any, job: Job) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                # Stay active until the sampler has read Redis twice: long enough for the
                # other worker to take a job, if the limit let it.
                async with ticks:
                    start = tick
                    await asyncio.wait_for(ticks.wait_for(lambda: tick >= start + 2), 10)
            finally:
                running -= 1

        async def sampler() -> None:
            nonlocal sampled, tick
            key = stack.queues.keys(queue).active
            while True:
                sampled = max(sampled, int(await stack.client.llen(key)))
                async with ticks:
                    tick += 1
                    ticks.notify_all()
                await asyncio.sleep(0.005)  # a sampling cadence, not a wait for a condition

        sampling = asyncio.create_task(sampler())
        try:
            for _ in range(2):
                stack.workers.start_worker(queue, {"n": handler}, concurrency=4)
            started = time.monotonic()
            await stack.queues.add_jobs(queue, [{"name": "n", "data": {"i": i}}
                                                for i in range(jobs)])
            await wait_for_counts(stack, queue, 60, completed=jobs, active=0)
        finally:
            sampling.cancel()
        return most, sampled, time.monotonic() - started


@pytest.mark.parametrize("runtime", ["native", "bullmq"])
async def test_global_concurrency_one_is_obeyed_by_two_workers(
        settings: Settings, redis_url: str, runtime: str) -> None:
    # bullmq-python's loop honours the limit too, but slowly: it finishes a job without
    # fetch-next and the freed slot posts no marker, so the next job is taken only when a
    # worker's marker wait times out (drainDelay, ~2-5 s a job). Fewer jobs for it.
    jobs = 8 if runtime == "native" else 3
    most, sampled, took = await _max_active(settings, redis_url, runtime, 1, jobs)
    assert most == 1 and sampled <= 1, (most, sampled, took)
    # The same run without the limit does overlap: the measure can see a breach.
    most, sampled, _ = await _max_active(settings, redis_url, runtime, None, jobs)
    assert most > 1, most


async def test_latest_merges_the_newest_of_every_state(settings: Settings, redis_url: str
                                                       ) -> None:
    async with open_stack(settings, redis_url) as stack:
        q = "latest"
        old = await stack.queues.add_jobs(q, [{"name": "old", "data": {}} for _ in range(60)])
        delayed = await stack.queues.add_job(q, "later", {}, {"delay": 600_000})
        prioritized = await stack.queues.add_job(q, "urgent", {}, {"priority": 2})
        newest = await stack.queues.add_job(q, "new", {})
        # Push the hashes' timestamps apart (adds in one millisecond tie).
        for i, job in enumerate([*old, delayed, prioritized, newest]):
            await stack.client.hset(stack.queues.keys(q).job(str(job.id)), "timestamp",
                                    str(1_700_000_000_000 + i))
        rows = await stack.queues.get_latest_jobs(q, 5)
        assert [r["id"] for r in rows] == [str(newest.id), str(prioritized.id),
                                          str(delayed.id), str(old[-1].id), str(old[-2].id)]
        assert [r["state"] for r in rows[:3]] == ["waiting", "prioritized", "delayed"]
        assert len(await stack.queues.get_latest_jobs(q, 50)) == 50
        # Bounded reads, whatever the queue's size: `limit` ids of each state at most.
        handle = await stack.queues.get_queue(q)
        ranges: list[tuple[Any, ...]] = []
        original = handle.backend.getRanges

        async def spy(*args: Any) -> Any:
            ranges.append(args)
            return await original(*args)

        handle.backend.getRanges = spy
        await stack.queues.get_latest_jobs(q, 20)
        assert ranges and all(start == 0 and end == 19 for _, start, end, _ in ranges)


def test_next_runs_follow_the_pattern_zone_and_interval() -> None:
    now = int(datetime(2026, 1, 9, 12, 0, tzinfo=UTC).timestamp() * 1000)

    def utc(runs: list[int]) -> list[str]:
        return [datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M") for ms in runs]

    # 9:00 in Paris is 8:00 UTC in winter; weekdays only skip the weekend.
    assert utc(next_runs("0 9 * * 1-5", tz="Europe/Paris", now_ms=now)) == [
        "01-12 08:00", "01-13 08:00", "01-14 08:00", "01-15 08:00", "01-16 08:00"]
    assert utc(next_runs("0 9 * * *", now_ms=now)) == [
        "01-10 09:00", "01-11 09:00", "01-12 09:00", "01-13 09:00", "01-14 09:00"]
    # Six fields: seconds first, as bullmq reads them.
    assert utc(next_runs("0 30 12 * * *", now_ms=now))[0] == "01-09 12:30"
    assert next_runs(every_ms=60_000, now_ms=now + 1) == [now + 60_000 * i
                                                          for i in range(1, 6)]
    for cron, tz, reason in [("61 * * * *", None, "Bad cron pattern '61 * * * *'"),
                             ("* * *", None, "expected 5 fields"),
                             ("0 9 * * *", "Mars/Olympus", "Unknown time zone")]:
        with pytest.raises(InvalidScheduleError, match=reason.replace("*", r"\*")):
            next_runs(cron, tz=tz, now_ms=now)
