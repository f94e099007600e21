"""The bullmq `Queue` objects of one process: one per queue name, made on first use."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from bullmq import Queue

from mailqueue.cluster import bullmq_connection
from mailqueue.errors import MailQueueError, UnknownQueueError
from mailqueue.job_options import merge_job_options, validate_job_options, validate_queue_name
from mailqueue.keys import Keys
from mailqueue.queues.discovery import QueueDiscovery


class QueueHandles:
    """Queue handles, whether a queue exists, and the keys of each (see keys.py)."""

    def __init__(self, connection: dict[str, Any], client: aioredis.Redis, prefix: str,
                 default_job_options: dict[str, Any], discovery: QueueDiscovery) -> None:
        self._connection = connection
        self._client = client
        self.prefix = prefix
        self.default_job_options = default_job_options
        self.discovery = discovery
        self._queues: dict[str, Queue] = {}
        self._closed = False

    def keys(self, queue: str) -> Keys:
        return Keys(self.prefix, queue)

    def handle(self, name: str) -> Queue:
        """The handle of `name`, whether or not the queue exists yet (adding makes it)."""
        validate_queue_name(name)
        if self._closed:
            raise MailQueueError("The queue manager is closed")
        queue = self._queues.get(name)
        if queue is None:
            queue = Queue(
                name,
                {
                    "connection": bullmq_connection(self._connection),
                    "prefix": self.prefix,
                    "defaultJobOptions": dict(self.default_job_options),
                },
            )
            self._queues[name] = queue
        return queue

    async def create_queue(self, name: str, **default_job_options: Any) -> Queue:
        """Create (or return) the queue `name`; idempotent.

        The queue's `meta` hash is written so that an empty queue is discoverable, exactly as
        BullMQ itself writes it on the first add.
        """
        queue = self.handle(name)
        if default_job_options:
            validate_job_options(default_job_options)
            queue.jobsOpts = merge_job_options(self.default_job_options, default_job_options)
        await self._client.hsetnx(self.keys(name).meta, "opts.maxLenEvents", 10000)
        self.discovery.note(name, True)
        return queue

    async def queue_exists(self, name: str) -> bool:
        validate_queue_name(name)
        pipe = self._client.pipeline(transaction=False)
        for key in self.keys(name).markers():
            pipe.exists(key)
        return any(await pipe.execute())

    async def get_queue(self, name: str) -> Queue:
        """The queue `name`; UnknownQueueError when no such queue exists under the prefix."""
        if name in self._queues or await self.queue_exists(name):
            return self.handle(name)
        raise UnknownQueueError(f"No queue named {name!r} under prefix {self.prefix!r}")

    async def job_state(self, q: Queue, job_id: str) -> str:
        """A job's state as a person reads it: waiting jobs of a paused queue are paused."""
        state = str(await q.getJobState(job_id))
        if state == "waiting" and await q.isPaused():
            return "paused"
        return state

    async def forget(self, name: str) -> None:
        """The queue is gone (obliterated): close its handle, and say so to discovery."""
        queue = self._queues.pop(name, None)
        if queue is not None:
            await queue.close()
        self.discovery.note(name, False)

    async def close(self) -> None:
        # Each handle owns a Redis client. A render still running during shutdown may make
        # one while the others close: refuse new ones from now on, and close until none is
        # left (an unclosed client is a ResourceWarning when the collector finds it).
        self._closed = True
        while self._queues:
            queues, self._queues = list(self._queues.values()), {}
            await asyncio.gather(*(q.close() for q in queues), return_exceptions=True)
