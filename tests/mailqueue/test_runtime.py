"""The native worker runtime (WORKER_RUNTIME=native) on the suite's real Redis: what it does
differently from bullmq-python's loop (fetch-next, pipelined completions, batched lock
renewal) and the guarantees that must not change (retries, back-off, pause, stalled jobs,
flows, removeOn*, event-stream entries like Node's, Node workers on the same queue).

The other worker tests run under either runtime (WORKER_RUNTIME in the environment); these
always run the native one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Job
from bullmq.custom_errors import UnrecoverableError

from mailqueue.runtime import NativeWorker
from mailqueue.settings import Settings
from tests.mailqueue.conftest import Stack, open_stack, wait_for_counts
from tests.waiting import eventually


@pytest.fixture
async def native(settings: Settings, redis_url: str) -> AsyncIterator[Stack]:
    native_settings = settings.model_copy(update={"worker_runtime": "native"})
    async with open_stack(native_settings, redis_url) as opened:
        yield opened


async def noop(data: Any, job: Job) -> Any:
    return data.get("i")


def _count_calls(obj: Any, name: str) -> list[Any]:
    """Record the arguments of every call of `obj.name` (an async method)."""
    calls: list[Any] = []
    original = getattr(obj, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await original(*args, **kwargs)

    setattr(obj, name, wrapper)
    return calls


async def test_jobs_are_fetched_by_the_previous_completion_in_pipelined_batches(
    native: Stack,
) -> None:
    await native.queues.add_jobs("fetch", [{"name": "n", "data": {"i": i}} for i in range(300)])
    managed = native.workers.start_worker("fetch", {"n": noop}, concurrency=10)
    assert isinstance(managed.worker, NativeWorker)
    fetches = _count_calls(managed.worker.backend, "moveToActive")
    await wait_for_counts(native, "fetch", 15, completed=300, active=0)
    pipe = managed.worker.script_pipe
    assert pipe.calls == 300  # one moveToFinished per job, nothing else per job
    assert pipe.batches < 300  # completions of several slots share a round trip
    # moveToActive only fills slots: at start (10) and once idle, not once per job.
    assert len(fetches) <= 10 + 5, len(fetches)


async def test_locks_are_renewed_in_one_call_for_all_active_jobs(native: Stack) -> None:
    async def slow(data: Any, job: Job) -> None:
        await asyncio.sleep(2.2)  # the scenario: jobs outlive twice their 1 s lock

    await native.queues.add_jobs("locks", [{"name": "s", "data": {}} for _ in range(4)])
    managed = native.workers.start_worker("locks", {"s": slow}, concurrency=4,
                                          lockDuration=1000, stalledInterval=500)
    renewals = _count_calls(managed.worker.backend, "extendLocks")
    stalled: list[str] = []
    managed.worker.on("stalled", lambda job_id, *_: stalled.append(job_id))
    await wait_for_counts(native, "locks", 10, completed=4)
    # Twice the lock duration: only renewal kept them; each renewal covers every job.
    assert stalled == []
    # One extendLocks call per renewal interval (250 ms here) for all the jobs due, never
    # one per job: ~2.2 s / 0.25 s wake-ups.
    assert 3 <= len(renewals) <= 12, len(renewals)
    assert max(len(job_ids) for job_ids, _tokens, _duration in renewals) == 4
    for job in (await native.queues.get_jobs("locks", "completed", per_page=10))["jobs"]:
        assert job["attempts_made"] == 1


async def test_an_abandoned_job_is_recovered_as_stalled(native: Stack) -> None:
    started = asyncio.Event()

    async def stuck(data: Any, job: Job) -> None:
        started.set()
        await asyncio.sleep(60)  # the scenario: a job that never ends while the test runs

    native.workers.start_worker("stall", {"j": stuck}, lockDuration=1000, stalledInterval=500)
    job = await native.queues.add_job("stall", "j", {})
    await asyncio.wait_for(started.wait(), 5)
    await native.workers.stop_worker("stall", timeout=0.2)  # abandons it: still active
    assert (await native.queues.get_job("stall", str(job.id)))["state"] == "active"
    native.workers.start_worker("stall", {"j": noop}, lockDuration=1000, stalledInterval=500)
    await wait_for_counts(native, "stall", 10, completed=1, active=0)


async def test_retries_back_off_and_unrecoverable_errors(native: Stack) -> None:
    tries: dict[str, list[float]] = {}

    async def flaky(data: Any, job: Job) -> str:
        tries.setdefault(data["k"], []).append(time.monotonic())
        if data["k"] == "never":
            raise UnrecoverableError("bad address")
        if len(tries[data["k"]]) < 3:
            raise RuntimeError("451 try later")
        return "sent"

    native.workers.start_worker("retry", {"f": flaky}, concurrency=2)
    ok = await native.queues.add_job("retry", "f", {"k": "ok"}, {
        "attempts": 3, "backoff": {"type": "exponential", "delay": 100}})
    never = await native.queues.add_job("retry", "f", {"k": "never"}, {"attempts": 5})
    await wait_for_counts(native, "retry", 10, completed=1, failed=1)
    info = await native.queues.get_job("retry", str(ok.id))
    assert info["return_value"] == "sent" and info["attempts_made"] == 3
    gaps = [b - a for a, b in zip(tries["ok"], tries["ok"][1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19, gaps  # 100 ms, then 200 ms
    failed = await native.queues.get_job("retry", str(never.id))
    assert failed["attempts_made"] == 1 and failed["failed_reason"] == "bad address"
    assert failed["stacktrace"]


async def test_rate_limit_and_delayed_jobs(native: Stack) -> None:
    await native.queues.add_jobs("limited", [{"name": "n", "data": {}} for _ in range(12)])
    started = time.monotonic()
    native.workers.start_worker("limited", {"n": noop}, concurrency=5,
                                limiter={"max": 5, "duration": 1000})
    await wait_for_counts(native, "limited", 10, completed=12)
    assert 1.8 < time.monotonic() - started < 4.5  # windows of 5: 5, 5, 2

    idle = native.workers.start_worker("later", {"n": noop}).worker
    await eventually(lambda: idle.waiting is not None, 5, "the idle worker blocked on the marker")
    added = time.monotonic()
    await native.queues.add_job("later", "n", {}, {"delay": 300})
    await wait_for_counts(native, "later", 5, completed=1)
    assert 0.25 < time.monotonic() - added < 1.2


async def test_pausing_the_worker_and_the_queue(native: Stack) -> None:
    gate = asyncio.Event()

    async def gated(data: Any, job: Job) -> None:
        await gate.wait()

    managed = native.workers.start_worker("pause", {"g": gated}, concurrency=2)
    await native.queues.add_jobs("pause", [{"name": "g", "data": {}} for _ in range(2)])
    await wait_for_counts(native, "pause", 5, active=2)
    pausing = asyncio.ensure_future(managed.worker.pause())
    await eventually(lambda: managed.worker.paused, 5, "the worker pausing")
    await asyncio.sleep(0.1)  # a window in which pause() must not return: jobs still run
    assert not pausing.done()
    gate.set()
    await asyncio.wait_for(pausing, 5)
    await native.queues.add_job("pause", "g", {})
    await asyncio.sleep(0.2)  # a window in which the paused worker must take nothing
    assert (await native.queues.get_job_counts("pause"))["waiting"] == 1
    managed.worker.resume()
    await wait_for_counts(native, "pause", 5, completed=3)

    queue = await native.queues.get_queue("pause")
    await queue.pause()
    await native.queues.add_job("pause", "g", {})
    await asyncio.sleep(0.2)  # a window in which no worker may take from a paused queue
    assert (await native.queues.get_job_counts("pause"))["completed"] == 3
    await queue.resume()  # its marker wakes the idle worker
    await wait_for_counts(native, "pause", 5, completed=4)


async def test_remove_on_complete_and_fail(native: Stack) -> None:
    async def maybe(data: Any, job: Job) -> None:
        if data["fail"]:
            raise ValueError("no")

    native.workers.start_worker("remove", {"m": maybe}, concurrency=3)
    await native.queues.add_jobs("remove", [
        {"name": "m", "data": {"fail": i % 2 == 1},
         "opts": {"removeOnComplete": True, "removeOnFail": 2, "attempts": 1}}
        for i in range(8)])
    counts = await wait_for_counts(native, "remove", 10, waiting=0, active=0)  # all 8 done
    assert counts["completed"] == 0 and counts["failed"] == 2, counts


async def test_children_move_their_parent_on(native: Stack, settings: Settings) -> None:
    from mailqueue.manager import MailManager

    async with MailManager(settings.model_copy(update={"worker_runtime": "native"})) as mail:
        flow = await mail.flows.add_flow({
            "name": "parent", "queueName": "fparent", "data": {},
            "children": [{"name": "c", "queueName": "fchild", "data": {"i": i}}
                         for i in range(3)]})

        async def parent(data: Any, job: Job) -> int:
            return len(await job.getChildrenValues())

        mail.start_worker("fchild", {"c": noop})
        mail.start_worker("fparent", {"parent": parent})
        tree = await eventually(lambda: mail.get_flow("fparent", flow["job_id"]), 10,
                                "the parent completed",
                                accept=lambda found: found["state"] == "completed")
        assert tree["return_value"] == 3


async def _event_names(client: aioredis.Redis, prefix: str, queue: str) -> list[str]:
    entries: Any = await client.xrange(f"{prefix}:{queue}:events")
    return [str(fields["event"]) for _id, fields in entries]


async def test_event_stream_entries_are_those_of_a_node_worker(
    native: Stack, node: Any
) -> None:
    jobs: list[dict[str, Any]] = [
        {"name": "e", "data": {}, "opts": {"attempts": 1}},
        {"name": "e", "data": {"fail": "boom"}, "opts": {"attempts": 1}}]
    for queue in ("ev-node", "ev-native"):
        for job in jobs:  # one at a time: the same order of entries for both
            await native.queues.add_job(queue, job["name"], job["data"], job["opts"])

    async def like_node(data: Any, job: Job) -> None:
        if data.get("fail"):
            raise RuntimeError(data["fail"])

    await node.run("work", queue="ev-node", jobs=2, seconds=15)
    native.workers.start_worker("ev-native", {"e": like_node}, concurrency=1)  # as Node's
    await wait_for_counts(native, "ev-native", 5, completed=1, failed=1)
    from_node = await _event_names(native.client, native.prefix, "ev-node")
    # The last entries (retries-exhausted, drained) may follow the counts by a moment.
    await eventually(lambda: _event_names(native.client, native.prefix, "ev-native"), 5,
                     f"the native worker's event entries equal to Node's {from_node}",
                     accept=lambda ours: ours == from_node)
    assert from_node.count("completed") == 1 and from_node.count("failed") == 1


async def test_node_and_native_workers_share_a_queue(native: Stack, node: Any) -> None:
    await native.queues.add_jobs("shared", [{"name": "s", "data": {"i": i}} for i in range(200)])
    ours: list[int] = []

    async def record(data: Any, job: Job) -> None:
        await asyncio.sleep(0.002)  # a job that takes a moment, so that both workers get some
        ours.append(data["i"])

    worker = await node.start("work", queue="shared", concurrency=5, seconds=30)
    await worker.wait_for("ready")
    native.workers.start_worker("shared", {"s": record}, concurrency=5)
    counts = await wait_for_counts(native, "shared", 20, completed=200, active=0)
    events = await worker.stop()
    by_node = [e for e in events if e["event"] == "completed"]
    assert counts["failed"] == 0
    assert len(ours) + len(by_node) == 200 and len(set(ours)) == len(ours)
    assert ours and by_node  # both took part
