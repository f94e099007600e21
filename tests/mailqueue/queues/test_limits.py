"""A queue's global concurrency (mailqueue/queues/limits.py) is obeyed by two workers of
either runtime (native and bullmq's loop)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from bullmq import Job

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
