"""A QueueManager and a WorkerManager on the test's prefix, without the whole facade; and plain
bullmq workers on that prefix (`worker_factory`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from bullmq import Worker

from mailqueue.bullmq_fixes import connection_options
from mailqueue.queues import QueueManager
from mailqueue.settings import Settings
from mailqueue.workers import WorkerManager
from tests.mailqueue.event_support import Processor, WorkerFactory
from tests.waiting import eventually


@dataclass
class Stack:
    queues: QueueManager
    workers: WorkerManager
    client: aioredis.Redis
    prefix: str


@contextlib.asynccontextmanager
async def open_stack(settings: Settings, redis_url: str) -> AsyncIterator[Stack]:
    """The two managers on one client, closed in order (workers, queues, client)."""
    connection = connection_options(redis_url)
    client = aioredis.Redis(decode_responses=True, **connection)
    queues = QueueManager(connection, client, settings.queue_prefix)
    workers = WorkerManager(connection, client, settings.queue_prefix, settings)
    try:
        yield Stack(queues, workers, client, settings.queue_prefix)
    finally:
        await workers.close(timeout=5)
        await queues.close()
        await client.aclose()


@pytest.fixture
async def stack(settings: Settings, redis_url: str) -> AsyncIterator[Stack]:
    async with open_stack(settings, redis_url) as opened:
        yield opened


async def wait_for_counts(
    stack: Stack, queue: str, timeout: float, **expected: int
) -> dict[str, int]:
    """Until the queue's counts include `expected` (e.g. completed=3), or AssertionError."""
    counts: dict[str, int] = await eventually(
        lambda: stack.queues.get_job_counts(queue), timeout, f"{queue}: counts {expected}",
        accept=lambda found: all(found.get(state) == n for state, n in expected.items()))
    return counts


@pytest.fixture
async def worker_factory(
    redis_url: str, prefix: str
) -> AsyncIterator[WorkerFactory]:
    """Starts plain bullmq Workers on the test's prefix, and closes them after the test."""
    workers: list[Worker] = []

    def start(queue: str, processor: Processor) -> Worker:
        worker = Worker(queue, processor, {"connection": connection_options(redis_url),
                                           "prefix": prefix})
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.close()
