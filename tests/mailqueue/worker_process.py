"""A worker process for the SIGKILL test: `python worker_process.py REDIS_URL PREFIX QUEUE`.

It serves `slow` jobs that never finish on their own, with short locks and stalled checks,
and prints `active <job id>` as each job starts, so the test knows when to kill it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job

from mailqueue.bullmq_fixes import connection_options
from mailqueue.settings import Settings
from mailqueue.workers import WorkerManager


async def main(redis_url: str, prefix: str, queue: str) -> None:
    async def slow(data: Any, job: Job) -> None:
        print(f"active {job.id}", flush=True)
        await asyncio.sleep(3600)

    connection = connection_options(redis_url)
    client = aioredis.Redis(decode_responses=True, **connection)
    settings = Settings(_env_file=None, redis_url=redis_url, queue_prefix=prefix)  # type: ignore[call-arg]
    workers = WorkerManager(connection, client, prefix, settings)
    workers.start_worker(queue, {"slow": slow}, concurrency=3, lockDuration=2000,
                         stalledInterval=2000)
    print("ready", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
