"""Canaries: each runs the scenario of a bullmq 3.4.4 bug on *plain* bullmq and passes while
the bug is there. The day a bullmq upgrade fixes one, its canary fails: delete the
workaround (mailqueue/bullmq_fixes/<bug>.py) and the canary, and update docs/bullmq-notes.md.
The numbers (#1...) are those of docs/bullmq-notes.md.
"""

from __future__ import annotations

import asyncio
import base64
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bullmq import FlowProducer, Job, Queue, Worker

from mailqueue.bullmq_fixes import connection_options
from tests.waiting import eventually


@pytest.fixture
async def queue(redis_url: str, prefix: str) -> AsyncIterator[Queue]:
    made = Queue("canary", {"connection": connection_options(redis_url), "prefix": prefix})
    yield made
    await made.obliterate(True)
    await made.close()


def plain_worker(redis_url: str, prefix: str, processor: Any, **opts: Any) -> Worker:
    """A bullmq Worker as bullmq makes it, but for the connection options of #1 (so that one
    bug's canary does not trip over another's)."""
    return Worker("canary", processor, {"connection": connection_options(redis_url),
                                        "prefix": prefix, **opts})


def test_1_blocking_connections_keep_redis_py_s_5_second_socket_timeout(redis_url: str) -> None:
    worker = Worker("canary", lambda job, token: None, {"connection": redis_url,
                                                         "autorun": False})
    connection = worker.blockingRedisConnection.conn.connection_pool.make_connection()
    assert connection.socket_timeout is not None  # fixed: None (a blocking read never times out)


async def test_2_a_worker_never_probes_the_redis_version(queue: Queue, redis_url: str,
                                                         prefix: str) -> None:
    await queue.add("ping", {})
    done: list[Any] = []
    worker = plain_worker(redis_url, prefix, lambda job, token: done.append(job.id))
    try:
        await eventually(lambda: done, what="the job run")
        # Redis >= 6 can block for fractions of a second, but the worker never asked.
        assert worker.blockingRedisConnection.capabilities["canDoubleTimeout"] is False
    finally:
        await worker.close(force=True)


@pytest.mark.timeout(60)
async def test_3_the_limiter_does_not_spread_jobs_over_its_windows(queue: Queue, redis_url: str,
                                                                   prefix: str) -> None:
    await queue.addBulk([{"name": "n", "data": {}} for _ in range(6)])
    finished: list[float] = []

    async def record(job: Job, token: str) -> None:
        finished.append(time.monotonic())

    started = time.monotonic()
    worker = plain_worker(redis_url, prefix, record, limiter={"max": 2, "duration": 300})
    try:
        await eventually(lambda: len(finished) == 6, timeout=45, what="6 limited jobs")
    finally:
        await worker.close(force=True)
    # A working limiter: windows of 2 every 300 ms, done in ~0.6-1 s. bullmq 3.4.4 stores
    # the limit and never reads it: it waits out its drain delay instead (seconds).
    assert finished[-1] - started > 2.5


def test_4_queue_has_no_get_metrics() -> None:
    assert not hasattr(Queue, "getMetrics")


def test_5_no_flow_or_dependency_reads() -> None:
    assert not hasattr(FlowProducer, "getFlow")
    assert not any(hasattr(Job, name) for name in (
        "getDependencies", "getDependenciesCount", "getFailedChildrenValues"))


async def test_6_an_async_listener_is_never_awaited() -> None:
    worker = Worker("canary", lambda job, token: None, {"connection": "redis://127.0.0.1:1",
                                                         "autorun": False})
    called: list[str] = []

    async def listener(*args: Any) -> None:
        called.append("ran")

    worker.on("completed", listener)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine was never awaited"
        worker.emit("completed", None, None)
        await asyncio.sleep(0.05)
    assert called == []  # fixed: ["ran"]


def test_7_python_and_node_name_worker_connections_differently() -> None:
    worker = Worker("emails", lambda job, token: None, {"connection": "redis://127.0.0.1:1",
                                                         "autorun": False})
    node_name = "bull:" + base64.b64encode(b"emails").decode()  # what Node BullMQ writes
    assert worker.clientName == "bull:emails" != node_name  # fixed: the same name as Node's


async def test_9_a_plain_def_processor_fails_every_job(queue: Queue, redis_url: str,
                                                       prefix: str) -> None:
    job = await queue.add("n", {}, {"attempts": 1})
    worker = plain_worker(redis_url, prefix, lambda job, token: 1)
    try:
        state = await eventually(lambda: queue.getJobState(job.id),
                                 accept=lambda s: s in ("completed", "failed"))
    finally:
        await worker.close(force=True)
    fresh = await Job.fromId(queue, job.id)
    assert state == "failed" and "await" in str(fresh.failedReason)  # fixed: completed
