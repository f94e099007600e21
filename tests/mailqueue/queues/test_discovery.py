"""Which queues exist (mailqueue/queues/discovery.py): empty ones, Node-made ones, none
invented by a lookup."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from bullmq import Job, Queue

from mailqueue.bullmq_fixes import connection_options
from mailqueue.errors import UnknownQueueError
from mailqueue.queues import QueueManager
from mailqueue.settings import Settings
from mailqueue.types import JOB_STATES


async def test_create_queue_is_idempotent_and_an_empty_queue_is_discoverable(
    qm: QueueManager, settings: Settings, redis_url: str, prefix: str
) -> None:
    await qm.create_queue("emails")
    await qm.create_queue("emails")
    assert await qm.list_queues(refresh=True) == ["emails"]
    assert await qm.get_job_counts("emails") == dict.fromkeys(JOB_STATES, 0)

    # Another process (a fresh manager) sees the empty queue too.
    client = aioredis.Redis(decode_responses=True, **connection_options(redis_url))
    other = QueueManager(connection_options(redis_url), client, prefix)
    try:
        assert await other.list_queues() == ["emails"]
        assert await other.queue_exists("emails")
        await other.get_queue("emails")
    finally:
        await other.close()
        await client.aclose()


async def test_list_queues_finds_raw_bullmq_queues_and_ignores_job_keys(
    qm: QueueManager, redis_url: str, prefix: str, redis_client: aioredis.Redis
) -> None:
    raw = Queue("made-elsewhere", {"connection": connection_options(redis_url), "prefix": prefix})
    try:
        for i in range(3):
            job = await raw.add("job", {"i": i}, {"jobId": f"custom-{i}"})
            await Job.addJobLog(raw, str(job.id), "a log line")
        await raw.add("later", {}, {"delay": 60_000})
    finally:
        await raw.close()
    await qm.create_queue("emails")
    # Keys that are not queues: another prefix, a bare key under ours.
    await redis_client.hset(f"other{prefix}:elsewhere:meta", "x", "1")
    await redis_client.set(f"{prefix}:stray", "1")
    try:
        assert await qm.list_queues(refresh=True) == ["emails", "made-elsewhere"]
    finally:
        await redis_client.delete(f"other{prefix}:elsewhere:meta")


async def test_list_queues_does_not_invent_queues_from_lookups(qm: QueueManager) -> None:
    await qm.create_queue("real")
    with pytest.raises(UnknownQueueError):
        await qm.get_job_counts("ghost")
    with pytest.raises(UnknownQueueError):
        await qm.get_jobs("ghost")
    assert await qm.list_queues(refresh=True) == ["real"]
