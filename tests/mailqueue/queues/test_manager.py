"""The operations on a whole queue that QueueManager owns (mailqueue/queues/manager.py):
pause and resume, clean, drain, obliterate, retry every failed job, promote every delayed one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from bullmq import Job

from mailqueue.errors import MailQueueError, UnknownQueueError
from mailqueue.queues import QueueManager
from tests.mailqueue.queues.conftest import boom, counts_of, has_counts, ok, running_worker
from tests.waiting import eventually


async def test_a_paused_queue_counts_and_lists_its_jobs_as_paused(qm: QueueManager) -> None:
    await qm.add_job("emails", "before", {})
    await qm.pause("emails")
    assert await qm.is_paused("emails")
    added = [await qm.add_job("emails", "during", {"i": i}) for i in range(2)]
    assert await counts_of(qm, "emails") == {"paused": 3}
    page = await qm.get_jobs("emails", "paused")
    assert page["total"] == 3
    assert {str(a.id) for a in added} <= {j["id"] for j in page["jobs"]}
    assert (await qm.get_jobs("emails", "waiting"))["total"] == 0
    assert (await qm.get_job("emails", str(added[0].id)))["state"] == "paused"

    await qm.resume("emails")
    assert not await qm.is_paused("emails")
    assert await counts_of(qm, "emails") == {"waiting": 3}
    assert (await qm.get_job("emails", str(added[0].id)))["state"] == "waiting"


async def test_a_paused_queue_processes_nothing_until_resumed(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.create_queue("emails")
    await qm.pause("emails")
    await qm.add_job("emails", "n", {})
    async with running_worker(redis_url, prefix, "emails", ok):
        # The window in which nothing may run: a worker takes an unpaused job within ms.
        await asyncio.sleep(0.3)
        assert await counts_of(qm, "emails") == {"paused": 1}
        await qm.resume("emails")
        await eventually(lambda: has_counts(qm, "emails", completed=1))


async def test_clean_removes_only_jobs_older_than_the_grace(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    async with running_worker(redis_url, prefix, "emails", ok):
        await eventually(lambda: has_counts(qm, "emails", completed=3))
    assert await qm.clean("emails", "completed", grace_ms=60_000) == []
    assert await counts_of(qm, "emails") == {"completed": 3}
    await asyncio.sleep(0.01)  # the jobs must be older than now - 0 ms: a clock tick
    removed = await qm.clean("emails", "completed", grace_ms=0)
    assert len(removed) == 3
    assert await counts_of(qm, "emails") == {}

    waiting = await qm.add_job("emails", "n", {})
    await asyncio.sleep(0.01)
    assert await qm.clean("emails", "waiting") == [str(waiting.id)]
    with pytest.raises(MailQueueError, match="Cannot clean state 'nonsense'"):
        await qm.clean("emails", "nonsense")
    with pytest.raises(MailQueueError, match=">= 0"):
        await qm.clean("emails", "completed", grace_ms=-1)


async def test_clean_with_a_limit_removes_at_most_that_many(qm: QueueManager) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(5)])
    await asyncio.sleep(0.01)
    assert len(await qm.clean("emails", "waiting", limit=2)) == 2
    assert await counts_of(qm, "emails") == {"waiting": 3}


async def test_clean_of_a_paused_queue_cleans_what_it_lists_as_paused(qm: QueueManager) -> None:
    await qm.create_queue("emails")
    await qm.pause("emails")
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(2)])
    await asyncio.sleep(0.01)
    assert await qm.clean("emails", "waiting") == []
    assert len(await qm.clean("emails", "paused")) == 2
    assert await counts_of(qm, "emails") == {}


async def test_drain_keeps_delayed_jobs_unless_asked(qm: QueueManager) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    await qm.add_job("emails", "later", {}, {"delay": 60_000})
    await qm.add_job("emails", "urgent", {}, {"priority": 1})
    await qm.drain("emails")
    assert await counts_of(qm, "emails") == {"delayed": 1}
    await qm.drain("emails", include_delayed=True)
    assert await counts_of(qm, "emails") == {}
    assert "emails" in await qm.list_queues(refresh=True)


async def test_obliterate_removes_every_trace_of_the_queue(
    qm: QueueManager, prefix: str, redis_client: aioredis.Redis
) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    await qm.add_job("emails", "later", {}, {"delay": 60_000})
    await qm.create_queue("keep")
    await qm.obliterate("emails")
    assert await qm.list_queues(refresh=True) == ["keep"]
    assert [k async for k in redis_client.scan_iter(match=f"{prefix}:emails:*")] == []
    with pytest.raises(UnknownQueueError):
        await qm.get_job_counts("emails")
    # The queue can be made again afterwards.
    await qm.add_job("emails", "n", {})
    assert await counts_of(qm, "emails") == {"waiting": 1}


async def test_obliterate_with_an_active_job_needs_force(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(job: Job, token: str) -> str:
        started.set()
        await release.wait()
        return "ok"

    await qm.add_job("emails", "n", {})
    async with running_worker(redis_url, prefix, "emails", slow):
        await asyncio.wait_for(started.wait(), 10)
        with pytest.raises(MailQueueError, match=r"Cannot obliterate 'emails'.*active.*force"):
            await qm.obliterate("emails")
        assert "emails" in await qm.list_queues(refresh=True)
        assert (await qm.get_job_counts("emails"))["active"] == 1
        assert not await qm.is_paused("emails"), "a refused obliterate left the queue paused"
        await qm.obliterate("emails", force=True)
        assert await qm.list_queues(refresh=True) == []
        release.set()


async def test_retry_failed_moves_every_failed_job_back(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.add_jobs(
        "emails", [{"name": "n", "data": {"n": i}, "opts": {"attempts": 1}} for i in range(3)]
    )
    async with running_worker(redis_url, prefix, "emails", boom):
        await eventually(lambda: has_counts(qm, "emails", failed=3))
    failed = await qm.get_jobs("emails", "failed")
    assert {j["failed_reason"] for j in failed["jobs"]} == {"boom 0", "boom 1", "boom 2"}
    assert await qm.retry_failed("emails") == 3
    assert await counts_of(qm, "emails") == {"waiting": 3}
    assert await qm.retry_failed("emails") == 0


async def test_retry_failed_handles_more_than_one_batch(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    # bullmq retries failed jobs 1,000 at a time; all of them must come back.
    await qm.add_jobs(
        "emails", [{"name": "n", "data": {"n": i}, "opts": {"attempts": 1}} for i in range(1200)]
    )
    async with running_worker(redis_url, prefix, "emails", boom, concurrency=50):
        await eventually(lambda: has_counts(qm, "emails", failed=1200), timeout=60)
    assert await qm.retry_failed("emails") == 1200
    assert await counts_of(qm, "emails") == {"waiting": 1200}


async def test_promote_delayed_makes_every_delayed_job_wait(qm: QueueManager) -> None:
    await qm.add_jobs(
        "emails", [{"name": "n", "data": {}, "opts": {"delay": 60_000}} for _ in range(2)]
    )
    await qm.add_job("emails", "now", {})
    assert await qm.promote_delayed("emails") == 2
    assert await counts_of(qm, "emails") == {"waiting": 3}
