"""How many jobs each queue holds and its metrics (mailqueue/queues/counts.py), read from what
workers wrote."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Job

from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager
from mailqueue.queues import QueueManager
from mailqueue.types import JOB_STATES
from tests.mailqueue.queues.conftest import boom, has_counts, ok, running_worker
from tests.waiting import eventually


async def test_job_counts_cover_every_state(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.add_jobs("work", [{"name": "ok", "data": {}}, {"name": "ok", "data": {}}])
    await qm.add_job("work", "bad", {"n": 1}, {"attempts": 1})

    async def route(job: Job, token: str) -> Any:
        return await (boom if job.name == "bad" else ok)(job, token)

    async with running_worker(redis_url, prefix, "work", route):
        await eventually(
            lambda: has_counts(qm, "work", completed=2, failed=1)
        )
    await qm.add_job("work", "w", {})
    await qm.add_job("work", "d", {}, {"delay": 60_000})
    await qm.add_job("work", "p", {}, {"priority": 5})
    counts = await qm.get_job_counts("work")
    assert set(counts) == set(JOB_STATES)
    assert {k: v for k, v in counts.items() if v} == {
        "completed": 2, "failed": 1, "waiting": 1, "delayed": 1, "prioritized": 1,
    }


async def test_many_job_counts(mail: MailManager) -> None:
    await mail.add_job("a", "x", {})
    await mail.add_job("b", "x", {})
    await mail.add_job("b", "y", {}, delay=60_000)
    await mail.queues.pause("b")
    counts = await mail.queues.get_many_job_counts(["a", "b"])
    assert counts["a"]["counts"]["waiting"] == 1 and counts["a"]["paused"] is False
    assert counts["b"]["counts"]["delayed"] == 1 and counts["b"]["paused"] is True


async def test_metrics_are_read_from_what_a_worker_writes(
    qm: QueueManager, redis_url: str, prefix: str, redis_client: aioredis.Redis
) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    await qm.add_jobs(
        "emails", [{"name": "bad", "data": {"n": i}, "opts": {"attempts": 1}} for i in range(2)]
    )

    async def route(job: Job, token: str) -> Any:
        return await (boom if job.name == "bad" else ok)(job, token)

    metrics = {"maxDataPoints": 60}
    async with running_worker(redis_url, prefix, "emails", route, metrics=metrics):
        await eventually(lambda: has_counts(qm, "emails", completed=3, failed=2))
    completed = await qm.get_metrics("emails", "completed")
    assert completed["count"] == 3
    failed = await qm.get_metrics("emails", "failed")
    assert failed["count"] == 2
    assert completed["per_minute"] == [] and completed["points"] == 0

    # Data points are written when a minute boundary passes: pretend the last one was
    # three minutes ago, and the next completion closes those minutes.
    key = f"{prefix}:emails:metrics:completed"
    await redis_client.hset(key, "prevTS", int(time.time() * 1000) - 180_000)
    await qm.add_job("emails", "n", {})
    async with running_worker(redis_url, prefix, "emails", route, metrics=metrics):
        await eventually(lambda: has_counts(qm, "emails", completed=4))
    completed = await qm.get_metrics("emails", "completed")
    assert completed["count"] == 4
    assert completed["points"] == len(completed["per_minute"]) == 3
    assert sum(completed["per_minute"]) == 3
    assert (await qm.get_metrics("emails", "completed", points=1))["per_minute"] == [0]
    with pytest.raises(MailQueueError, match="kind must be"):
        await qm.get_metrics("emails", "stalled")


async def test_all_queue_metrics(qm: QueueManager, redis_url: str, prefix: str) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(2)])
    await qm.add_job("reports", "n", {})
    await qm.pause("reports")
    await qm.create_queue("empty")
    async with running_worker(redis_url, prefix, "emails", ok, metrics={"maxDataPoints": 60}):
        await eventually(lambda: has_counts(qm, "emails", completed=2))
    metrics = await qm.get_all_queue_metrics()
    assert sorted(metrics) == ["emails", "empty", "reports"]
    assert metrics["emails"]["counts"]["completed"] == 2
    assert metrics["emails"]["completed"]["count"] == 2
    assert metrics["emails"]["paused"] is False
    assert metrics["reports"]["paused"] is True
    assert metrics["reports"]["counts"]["paused"] == 1
    assert metrics["empty"]["counts"] == dict.fromkeys(JOB_STATES, 0)
    assert metrics["empty"]["failed"]["count"] == 0
