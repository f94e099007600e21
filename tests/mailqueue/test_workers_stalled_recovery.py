"""Stalled-job recovery: the jobs of a worker process that is SIGKILLed mid-job come back,
once their locks expire, to another worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job

from tests.mailqueue.conftest import Stack, wait_for_counts


@pytest.mark.timeout(60)
async def test_jobs_of_a_sigkilled_worker_are_recovered_by_another(
    stack: Stack, redis_url: str, prefix: str
) -> None:
    queue = "crash"
    await stack.queues.add_jobs(queue, [{"name": "slow", "data": {"i": i}} for i in range(6)])
    script = Path(__file__).with_name("worker_process.py")
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), redis_url, prefix, queue,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    started: list[str] = []
    try:
        # The child serves 3 jobs at a time and never finishes them. Its handlers' own lines
        # tell when all 3 run: the counts alone say "active" as soon as moveToActive
        # returned, a moment before the third handler starts.
        assert child.stdout is not None
        async with asyncio.timeout(15):
            while len(started) < 3:
                line = (await child.stdout.readline()).decode()
                assert line, "the worker process ended"
                if line.startswith("active "):
                    started.append(line.split()[1])
        await wait_for_counts(stack, queue, 15, active=3, waiting=3)
        assert len(await stack.workers.list_workers(queue)) == 1
    finally:
        os.kill(child.pid, signal.SIGKILL)
        out, err = await asyncio.wait_for(child.communicate(), 5)
    assert child.returncode == -signal.SIGKILL, err
    assert len(started) == 3 and "active " not in out.decode(), (started, out, err)

    done: list[int] = []

    async def fast(data: Any, job: Job) -> None:
        done.append(data["i"])

    stack.workers.start_worker(queue, {"slow": fast}, concurrency=3, lockDuration=2000,
                               stalledInterval=1000)
    # The 3 waiting jobs run at once; the 3 the child held come back once their locks expire.
    await wait_for_counts(stack, queue, 20, completed=6)
    counts = await stack.queues.get_job_counts(queue)
    assert counts["failed"] == 0 and counts["active"] == 0
    assert sorted(done) == [0, 1, 2, 3, 4, 5]
