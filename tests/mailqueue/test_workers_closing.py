"""WorkerManager closing its workers: a close waits for active jobs or gives up after its
timeout, and a close that races a worker's fetch of the next job (bullmq's moveToActive)
finishes or abandons the jobs it took and leaves no connection behind."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from typing import Any

import pytest
from bullmq import Job

from mailqueue.runtime import NativeWorker
from mailqueue.workers import ManagedWorker
from tests.mailqueue.conftest import Stack


async def test_close_waits_for_active_jobs(stack: Stack) -> None:
    started = asyncio.Event()

    async def slow(data: Any, job: Job) -> str:
        started.set()
        await asyncio.sleep(1)
        return "done"

    managed = stack.workers.start_worker("graceful", {"slow": slow})
    job = await stack.queues.add_job("graceful", "slow", {})
    await asyncio.wait_for(started.wait(), 5)
    await stack.workers.stop_worker("graceful", timeout=10)
    assert not managed.running
    info = await stack.queues.get_job("graceful", str(job.id))
    assert info["state"] == "completed" and info["return_value"] == "done"
    # A job added after the close stays waiting: nobody serves the queue any more.
    await stack.queues.add_job("graceful", "slow", {})
    await asyncio.sleep(0.3)  # the window in which a live worker would have taken it
    assert (await stack.queues.get_job_counts("graceful"))["waiting"] == 1


async def test_close_gives_up_after_its_timeout_without_failing_the_job(stack: Stack) -> None:
    started = asyncio.Event()

    async def stuck(data: Any, job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    stack.workers.start_worker("stuck", {"stuck": stuck})
    job = await stack.queues.add_job("stuck", "stuck", {})
    await asyncio.wait_for(started.wait(), 5)
    before = time.monotonic()
    await stack.workers.close(timeout=0.5)
    assert time.monotonic() - before < 2
    # Abandoned, not failed: it is still active and will come back as a stalled job.
    assert (await stack.queues.get_job("stuck", str(job.id)))["state"] == "active"


def _close_when_busy(stack: Stack, managed: ManagedWorker, after: int, done: list[int],
                     timeout: float, moment: str = "before") -> asyncio.Future[asyncio.Task[None]]:
    """Start the manager's close of `managed`'s queue from inside a moveToActive call (or, in
    the native runtime, a moveToFinished with fetch-next), once `after` jobs are done: the
    call is in flight while the close begins (the race). `moment`: before the script runs,
    or after it has made a job active."""
    backend = managed.worker.backend
    original = backend.moveToActive
    started: asyncio.Future[asyncio.Task[None]] = asyncio.get_running_loop().create_future()

    def start_close() -> None:
        started.set_result(asyncio.ensure_future(
            stack.workers.stop_worker(managed.queue, timeout=timeout)
        ))

    async def move_to_active(token: str, opts: dict[str, Any]) -> Any:
        due = len(done) >= after and not started.done()
        if due and moment == "before":
            start_close()
            await asyncio.sleep(0)  # the close starts while this call is still to be made
        result = await original(token, opts)
        if due and moment == "after" and not started.done():
            start_close()
            await asyncio.sleep(0)
        return result

    backend.moveToActive = move_to_active
    if isinstance(managed.worker, NativeWorker):
        # The native loop fetches most jobs with the completion of the previous one
        # (moveToFinished with fetch-next, through its ScriptPipe): the same race there.
        pipe = managed.worker.script_pipe
        original_call = pipe.call

        async def call(script: Any, keys: Any, args: Any) -> Any:
            due = len(done) >= after and not started.done()
            if due and moment == "before":
                start_close()
                await asyncio.sleep(0)
            result = await original_call(script, keys, args)
            if due and moment == "after" and not started.done():
                start_close()
                await asyncio.sleep(0)
            return result

        pipe.call = call  # type: ignore[method-assign,assignment]
    return started


def _open_sockets(managed: ManagedWorker) -> list[str]:
    """The connections of the worker's two Redis clients that are still connected."""
    found = []
    for connection in (managed.worker.redisConnection, managed.worker.blockingRedisConnection):
        client = connection.conn
        pool = client.connection_pool
        candidates = [client.connection, *getattr(pool, "_available_connections", []),
                      *getattr(pool, "_in_use_connections", [])]
        found += [repr(c) for c in candidates if c is not None and c.is_connected]
    return found


async def _assert_closed_cleanly(stack: Stack, managed: ManagedWorker) -> None:
    """No socket of the worker is open, none of its name is in CLIENT LIST, and collecting
    garbage warns of no unclosed connection."""
    client_name = managed.worker.clientName
    await asyncio.sleep(0.3)  # a stray task would reconnect within this
    assert _open_sockets(managed) == []
    names = [client.get("name") for client in await stack.client.client_list()]
    assert client_name not in names, names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


@pytest.mark.parametrize("moment", ["before", "after"])
@pytest.mark.parametrize("limiter", [None, {"max": 10, "duration": 1000}],
                         ids=["busy", "busy-rate-limited"])
async def test_closing_a_busy_worker_finishes_its_jobs_and_leaves_no_connection(
    stack: Stack, limiter: dict[str, int] | None, moment: str
) -> None:
    # A getNextJob task inside moveToActive when close began still got a job: bullmq's close
    # neither waited for nor ran it, so the job stayed active, or it ran on the closed client,
    # which reconnected (an unclosed socket: ResourceWarning) and failed the job with a
    # KeyError from redis-py's pool.
    done: list[int] = []
    failed: list[str] = []

    async def quick(data: Any, job: Job) -> None:
        await asyncio.sleep(0.01)
        done.append(data["i"])

    await stack.queues.add_jobs("busy", [{"name": "quick", "data": {"i": i}} for i in range(60)])
    options = {"limiter": limiter} if limiter else {}
    managed = stack.workers.start_worker("busy", {"quick": quick}, concurrency=5, **options)
    managed.worker.on("failed", lambda job, err, *_: failed.append(f"{job.id}: {err!r}"))
    # Rate-limited: the 11th job is past the first window, after a limit sleep.
    closing = await asyncio.wait_for(
        _close_when_busy(stack, managed, 11, done, 10, moment), 15
    )
    await asyncio.wait_for(closing, 15)
    assert not managed.running
    counts = await stack.queues.get_job_counts("busy")
    assert failed == [] and counts["failed"] == 0
    # Every job the worker took was run to the end; nothing is left active.
    assert counts["active"] == 0 and counts["completed"] == len(done) > 11, counts
    await _assert_closed_cleanly(stack, managed)


@pytest.mark.parametrize("moment", ["before", "after"])
async def test_force_closing_a_busy_worker_abandons_its_jobs_and_leaves_no_connection(
    stack: Stack, moment: str
) -> None:
    done: list[int] = []
    failed: list[str] = []

    async def some_stuck(data: Any, job: Job) -> None:
        await asyncio.sleep(60 if data["i"] % 4 == 3 else 0.01)
        done.append(data["i"])

    await stack.queues.add_jobs(
        "forced", [{"name": "job", "data": {"i": i}} for i in range(60)]
    )
    managed = stack.workers.start_worker("forced", {"job": some_stuck}, concurrency=5)
    managed.worker.on("failed", lambda job, err, *_: failed.append(f"{job.id}: {err!r}"))
    closing = await asyncio.wait_for(_close_when_busy(stack, managed, 6, done, 0.3, moment), 15)
    before = time.monotonic()
    await asyncio.wait_for(closing, 15)
    assert time.monotonic() - before < 2
    counts = await stack.queues.get_job_counts("forced")
    # Abandoned, not failed: the stuck jobs stay active until their locks expire.
    assert failed == [] and counts["failed"] == 0
    assert counts["active"] >= 1 and counts["completed"] <= len(done), counts
    await _assert_closed_cleanly(stack, managed)
