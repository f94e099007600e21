"""What the EventManager tests share: processors that succeed or fail for the plain bullmq
workers of the `worker_factory` fixture (conftest.py), and a queue's event ids as Redis holds
them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job, Worker

Processor = Callable[[Job, str], Awaitable[Any]]
WorkerFactory = Callable[[str, Processor], Worker]


async def ok(job: Job, token: str) -> Any:
    return {"sent": job.data.get("to"), "n": 1}


async def boom(job: Job, token: str) -> Any:
    raise RuntimeError(f"smtp down for {job.name}")


async def event_ids(client: aioredis.Redis, prefix: str, queue: str, after: str) -> list[str]:
    """The ids in the queue's event stream after `after` (exclusive), oldest first."""
    entries: Any = await client.xrange(f"{prefix}:{queue}:events", f"({after}", "+")
    return [str(entry_id) for entry_id, _ in entries]
