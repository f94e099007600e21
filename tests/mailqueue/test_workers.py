"""WorkerManager against the suite's real Redis: routing, handlers, concurrency, close, metrics,
listing, and stalled-job recovery after a worker process is SIGKILLed."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job

from mailqueue.errors import MailQueueError
from mailqueue.runtime import NativeWorker
from mailqueue.workers import (
    HandlerRegistry,
    ManagedWorker,
    WorkerManager,
    default_handlers,
    register_handler,
)
from tests.mailqueue.conftest import Stack, wait_for_counts
from tests.waiting import eventually


async def test_jobs_are_routed_by_name_to_sync_and_async_handlers(stack: Stack) -> None:
    async def welcome(data: Any, job: Job) -> str:
        return f"welcome {data['to']}"

    def reset(data: Any, job: Job) -> dict[str, Any]:
        return {"reset": data["to"], "job": job.name}

    stack.workers.start_worker("route", {"send-welcome": welcome, "send-reset": reset})
    a = await stack.queues.add_job("route", "send-welcome", {"to": "ada@example.com"})
    b = await stack.queues.add_job("route", "send-reset", {"to": "bob@example.com"})
    await wait_for_counts(stack, "route", 5, completed=2)
    assert (await stack.queues.get_job("route", str(a.id)))["return_value"] == \
        "welcome ada@example.com"
    assert (await stack.queues.get_job("route", str(b.id)))["return_value"] == \
        {"reset": "bob@example.com", "job": "send-reset"}


async def test_unknown_job_name_fails_at_once_without_retries(stack: Stack) -> None:
    async def known(data: Any, job: Job) -> None:
        return None

    stack.workers.start_worker("unknown", {"send-welcome": known, "send-notification": known})
    job = await stack.queues.add_job("unknown", "send-welcom", {}, {"attempts": 5})
    await wait_for_counts(stack, "unknown", 5, failed=1)
    info = await stack.queues.get_job("unknown", str(job.id))
    assert info["state"] == "failed"
    assert info["attempts_made"] == 1  # unrecoverable: the 4 other attempts are not made
    reason = info["failed_reason"] or ""
    assert "'send-welcom'" in reason
    assert "send-notification, send-welcome" in reason


async def test_handler_errors_fail_the_job_and_are_retried(stack: Stack) -> None:
    calls = 0

    async def flaky(data: Any, job: Job) -> str:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise RuntimeError("SMTP said 451")
        return "sent"

    stack.workers.start_worker("flaky", {"send": flaky})
    job = await stack.queues.add_job(
        "flaky", "send", {}, {"attempts": 3, "backoff": {"type": "fixed", "delay": 50}}
    )
    await wait_for_counts(stack, "flaky", 5, completed=1)
    info = await stack.queues.get_job("flaky", str(job.id))
    assert info["return_value"] == "sent" and info["attempts_made"] == 2


async def test_concurrency_runs_that_many_jobs_at_once(stack: Stack) -> None:
    running = peak = 0

    async def slow(data: Any, job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.4)
        running -= 1

    await stack.queues.add_jobs("conc", [{"name": "slow", "data": {}} for _ in range(8)])
    started = time.monotonic()
    managed = stack.workers.start_worker("conc", {"slow": slow}, concurrency=4)
    assert managed.concurrency == 4
    await wait_for_counts(stack, "conc", 5, completed=8)
    assert peak == 4
    assert time.monotonic() - started < 1.6  # two rounds of 0.4 s, not eight


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


async def test_metrics_are_written_for_completed_and_failed_jobs(stack: Stack) -> None:
    async def maybe(data: Any, job: Job) -> None:
        if data.get("fail"):
            raise ValueError("bad address")

    stack.workers.start_worker("metrics", {"send": maybe})
    await stack.queues.add_jobs("metrics", [
        {"name": "send", "data": {"fail": i % 3 == 0}, "opts": {"attempts": 1}}
        for i in range(9)
    ])
    await wait_for_counts(stack, "metrics", 5, completed=6, failed=3)
    completed = await stack.queues.get_metrics("metrics", "completed")
    failed = await stack.queues.get_metrics("metrics", "failed")
    assert completed["count"] == 6 and failed["count"] == 3


async def test_registry_and_register_handler(stack: Stack) -> None:
    registry = HandlerRegistry()

    @registry.register("send-invoice")
    async def invoice(data: Any, job: Job) -> str:
        return "invoice"

    registry.register("ping", lambda data, job: "pong")
    assert sorted(registry) == ["ping", "send-invoice"]

    @register_handler("test-default-handler")
    def default(data: Any, job: Job) -> str:
        return "default"

    try:
        assert default_handlers["test-default-handler"] is default
        stack.workers.start_worker("registry", registry)
        job = await stack.queues.add_job("registry", "ping", {})
        await wait_for_counts(stack, "registry", 5, completed=1)
        assert (await stack.queues.get_job("registry", str(job.id)))["return_value"] == "pong"
    finally:
        default_handlers.remove("test-default-handler")


async def test_default_handlers_include_registered_ones(stack: Stack) -> None:
    pytest.importorskip("mailqueue.mail.handlers", reason="the e-mail handlers are not in yet")

    @register_handler("test-extra")
    async def extra(data: Any, job: Job) -> str:
        return "extra"

    try:
        stack.workers.start_worker("defaults", None)
        job = await stack.queues.add_job("defaults", "test-extra", {})
        await wait_for_counts(stack, "defaults", 5, completed=1)
        assert (await stack.queues.get_job("defaults", str(job.id)))["return_value"] == "extra"
        assert "send-welcome" in WorkerManager.create_email_handlers()
    finally:
        default_handlers.remove("test-extra")


def test_missing_email_handlers_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both: once an earlier test has imported the flows, they no longer import the handlers.
    monkeypatch.setitem(sys.modules, "mailqueue.mail.handlers", None)
    monkeypatch.setitem(sys.modules, "mailqueue.mail.flow_handlers", None)
    with pytest.raises(MailQueueError, match="e-mail handlers cannot be loaded"):
        WorkerManager.create_email_handlers()


@pytest.mark.parametrize(
    ("queue", "handlers", "options", "message"),
    [
        ("q", {"a": print}, {"concurrency": 0}, "concurrency"),
        ("q", {"a": print}, {"prefix": "x"}, "set by the manager"),
        ("q", {"a": print}, {"limiter": {"max": 0, "duration": 1000}}, "limiter"),
        ("q", {"a": print}, {"limiter": {"max": 5}}, "limiter"),
        ("q", {}, {}, "No handlers"),
        ("q", {"a": "not callable"}, {}, "not callable"),
        ("bad:name", {"a": print}, {}, "Bad queue name"),
    ],
)
async def test_bad_worker_arguments_are_refused(
    stack: Stack, queue: str, handlers: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(MailQueueError, match=message):
        stack.workers.start_worker(queue, handlers, **options)
    assert stack.workers.workers() == []


async def test_list_workers_sees_running_python_workers(stack: Stack) -> None:
    async def noop(data: Any, job: Job) -> None:
        return None

    one = stack.workers.start_worker("listed", {"x": noop})
    two = stack.workers.start_worker("listed", {"x": noop})
    stack.workers.start_worker("other", {"x": noop})
    # The workers name their connections as they start.
    listed = await eventually(lambda: stack.workers.list_workers("listed"), 5,
                              "both workers listed", accept=lambda found: len(found) == 2)
    assert {w["name"] for w in listed} == {one.name, two.name}
    for worker in listed:
        assert worker["queue"] == "listed" and worker["language"] == "python"
        assert worker["connections"] == 2 and worker["addr"]
        assert worker["age_s"] >= 0 and worker["idle_s"] >= 0
    everyone = await stack.workers.list_workers()
    assert sorted(w["queue"] for w in everyone) == ["listed", "listed", "other"]
    await stack.workers.stop_worker("listed")
    # The sockets are closed; Redis drops them from CLIENT LIST a moment later.
    await eventually(lambda: stack.workers.list_workers("listed"), 2, "no worker listed",
                     accept=lambda found: found == [])
    assert len(await stack.workers.list_workers("other")) == 1


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
