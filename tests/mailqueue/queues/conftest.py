"""A QueueManager on the test's prefix (`qm`), and what the tests of mailqueue/queues/ share:
a plain bullmq Worker to run jobs, two handlers, and reads of what Redis holds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Job, Worker

from mailqueue.bullmq_fixes import connection_options
from mailqueue.queues import QueueManager
from mailqueue.settings import Settings

Processor = Callable[[Job, str], Awaitable[Any]]


@pytest.fixture
async def qm(
    settings: Settings, redis_url: str, prefix: str
) -> AsyncIterator[QueueManager]:
    client = aioredis.Redis(decode_responses=True, **connection_options(redis_url))
    manager = QueueManager(
        connection_options(redis_url), client, prefix, settings.default_job_options()
    )
    yield manager
    await manager.close()
    await client.aclose()


@asynccontextmanager
async def running_worker(
    redis_url: str, prefix: str, queue: str, processor: Processor, **opts: Any
) -> AsyncIterator[Worker]:
    worker = Worker(
        queue, processor, {"connection": connection_options(redis_url), "prefix": prefix, **opts}
    )
    try:
        yield worker
    finally:
        await worker.close()


async def ok(job: Job, token: str) -> str:
    return "done"


async def boom(job: Job, token: str) -> None:
    raise RuntimeError(f"boom {job.data.get('n')}")


async def stored_opts(redis_client: aioredis.Redis, prefix: str, queue: str, job_id: str
                      ) -> dict[str, Any]:
    raw = await redis_client.hget(f"{prefix}:{queue}:{job_id}", "opts")
    assert raw is not None, f"job {job_id} not stored"
    opts: dict[str, Any] = json.loads(raw)
    return opts


async def counts_of(qm: QueueManager, queue: str) -> dict[str, int]:
    return {k: v for k, v in (await qm.get_job_counts(queue)).items() if v}


async def has_counts(qm: QueueManager, queue: str, **expected: int) -> bool:
    counts = await qm.get_job_counts(queue)
    return all(counts[k] == v for k, v in expected.items())
