"""Each workaround of mailqueue.bullmq_fixes, shown to remove the symptom that
docs/bullmq-notes.md describes.

Each test here failed with its fix disabled (checked by hand when the fix was written).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from bullmq import Job

from mailqueue.bullmq_fixes import (
    add_listener,
    find_workers,
    parse_client_list,
)
from tests.mailqueue.conftest import Stack, wait_for_counts
from tests.waiting import eventually


async def completed_job(stack: Stack, queue: str, job_id: str, timeout: float) -> dict[str, Any]:
    info = await eventually(lambda: stack.queues.get_job(queue, job_id), timeout,
                            f"job {job_id} completed",
                            accept=lambda found: found["state"] == "completed", interval=0.02)
    return dict(info)


async def echo(data: Any, job: Job) -> Any:
    return data


# --- 1. idle stalls -----------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_idle_worker_picks_up_a_new_job_within_a_second(stack: Stack) -> None:
    # Without socket_timeout=None the worker's 5 s blocking waits time out, and redis-py
    # retries them with a growing back-off (2, 4, 8 s...): 24 s idle falls into the 21-29 s
    # back-off, and the job waited ~5 s (measured). docs/bullmq-notes.md #1.
    stack.workers.start_worker("idle", {"ping": echo}, concurrency=1)
    await asyncio.sleep(24)  # the scenario: this long idle, inside the 21-29 s back-off
    added = time.monotonic()
    job = await stack.queues.add_job("idle", "ping", {"n": 1})
    await completed_job(stack, "idle", str(job.id), timeout=10)
    assert time.monotonic() - added < 1.0


# --- 2. sub-second delays --------------------------------------------------------------------


async def test_a_200ms_delayed_job_runs_well_under_a_second(stack: Stack) -> None:
    stack.workers.start_worker("delays", {"ping": echo}, concurrency=1)
    await eventually(lambda: stack.workers.list_workers("delays"), 10, "the worker connected")
    lateness = []
    for _ in range(3):
        job = await stack.queues.add_job("delays", "ping", {}, {"delay": 200})
        info = await completed_job(stack, "delays", str(job.id), timeout=5)
        assert info["processed_on"] is not None
        waited = info["processed_on"] - info["timestamp"]
        assert waited >= 200
        lateness.append(waited)
    # bullmq rounds the block timeout up to a whole second without the fix: ~1,100 ms.
    assert max(lateness) < 600, lateness


# --- 3. the rate limiter ---------------------------------------------------------------------


async def _rate_over_ten_seconds(stack: Stack, queue: str, workers: int) -> float:
    """Jobs started per second over the 10 s after the first one started.

    Measured from the jobs' processedOn (Redis time, set as each job becomes active), not from
    the test's clock: a loaded machine that starts the workers late, or reads the results
    late, does not change the count. 200 jobs: even at the upper tolerance the queue cannot
    run dry inside the window, so the window is always full.
    """
    jobs = await stack.queues.add_jobs(
        queue, [{"name": "ping", "data": {"i": i}} for i in range(200)]
    )
    keys = [f"{stack.prefix}:{queue}:{job.id}" for job in jobs]
    for _ in range(workers):
        stack.workers.start_worker(
            queue, {"ping": echo}, concurrency=5, limiter={"max": 10, "duration": 1000}
        )

    async def starts() -> list[int]:
        async with stack.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "processedOn")
            raw = await pipe.execute()
        return sorted(int(value) for value in raw if value)

    # processedOn is set by the moveToActive script, so it never decreases: once one job
    # started at or after first + 10 s, every job of the window has its timestamp.
    started: list[int] = await eventually(
        starts, 60, "a job started 10 s after the first",
        accept=lambda found: bool(found) and found[-1] >= found[0] + 10_000, interval=0.25)
    first = started[0]
    in_window = [t for t in started if t < first + 10_000]
    return len(in_window) / 10


async def test_limiter_holds_ten_jobs_per_second(stack: Stack) -> None:
    # Without the fix: {max: 10, duration: 1000} ran 10 jobs per ~5 s.
    rate = await _rate_over_ten_seconds(stack, "limited", workers=1)
    assert 8.5 <= rate <= 11.5, rate


async def test_limiter_is_shared_by_two_workers(stack: Stack) -> None:
    rate = await _rate_over_ten_seconds(stack, "limited2", workers=2)
    assert 8.5 <= rate <= 11.5, rate
    workers = await stack.workers.list_workers("limited2")
    assert len(workers) == 2


async def test_limited_worker_closes_promptly(stack: Stack) -> None:
    await stack.queues.add_jobs("slowlimit", [{"name": "ping", "data": {}} for _ in range(5)])
    managed = stack.workers.start_worker(
        "slowlimit", {"ping": echo}, concurrency=1, limiter={"max": 1, "duration": 60_000}
    )
    await wait_for_counts(stack, "slowlimit", 5, completed=1)
    started = time.monotonic()
    await managed.close(timeout=5)
    # The worker sleeps out a 60 s limit window; closing must cut that sleep short.
    assert time.monotonic() - started < 1.0
    assert not managed.running


# --- 6. async event listeners ----------------------------------------------------------------


async def test_async_listener_on_a_bullmq_emitter_runs(stack: Stack) -> None:
    managed = stack.workers.start_worker("listen", {"ping": echo}, concurrency=1)
    seen: list[str] = []
    done = asyncio.Event()

    async def on_completed(job: Job, result: Any) -> None:
        await asyncio.sleep(0)
        seen.append(str(job.id))
        done.set()

    add_listener(managed.worker, "completed", on_completed)
    job = await stack.queues.add_job("listen", "ping", {})
    await asyncio.wait_for(done.wait(), 5)
    assert seen == [str(job.id)]


# --- 9. sync processors ----------------------------------------------------------------------


async def test_sync_handler_completes_without_blocking_the_loop(stack: Stack) -> None:
    threads: list[int] = []

    def slow_sync(data: Any, job: Job) -> int:
        threads.append(threading.get_ident())
        time.sleep(0.5)
        return int(data["n"]) * 2

    stack.workers.start_worker("sync", {"double": slow_sync}, concurrency=2)
    job = await stack.queues.add_job("sync", "double", {"n": 21})
    # The loop keeps ticking while the handler sleeps in its thread.
    ticks = 0
    while (await stack.queues.get_job_counts("sync"))["completed"] == 0:
        ticks += 1
        await asyncio.sleep(0.02)
        assert ticks < 500
    info = await stack.queues.get_job("sync", str(job.id))
    assert info["return_value"] == 42
    assert threads and threads[0] != threading.get_ident()
    assert ticks >= 10


# --- 7. worker discovery across Node and Python ----------------------------------------------

# Real CLIENT LIST lines (Redis 7), shortened only in the trailing fields.
CLIENT_LIST = "\n".join([
    # A Python worker named by the manager: two connections, one name.
    "id=11 addr=127.0.0.1:50110 laddr=127.0.0.1:6379 fd=9 name=bull:emails:w:host-42-1 "
    "age=120 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 cmd=evalsha user=default",
    "id=12 addr=127.0.0.1:50112 laddr=127.0.0.1:6379 fd=10 name=bull:emails:w:host-42-1 "
    "age=119 idle=3 flags=b db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 cmd=bzpopmin user=default",
    # Two unnamed Python workers of one queue: four connections, same name.
    "id=20 addr=127.0.0.1:50200 fd=11 name=bull:reports age=50 idle=0 flags=N db=0 cmd=evalsha",
    "id=21 addr=127.0.0.1:50201 fd=12 name=bull:reports age=50 idle=1 flags=b db=0 cmd=bzpopmin",
    "id=22 addr=127.0.0.1:50202 fd=13 name=bull:reports age=40 idle=0 flags=N db=0 cmd=evalsha",
    "id=23 addr=127.0.0.1:50203 fd=14 name=bull:reports age=40 idle=2 flags=b db=0 cmd=bzpopmin",
    # A Node worker of `emails`: base64 of the queue name.
    "id=30 addr=10.0.0.5:41000 fd=15 name=bull:ZW1haWxz age=300 idle=0 flags=N db=0 cmd=evalsha",
    "id=31 addr=10.0.0.5:41002 fd=16 name=bull:ZW1haWxz age=300 idle=4 flags=b db=0 "
    "cmd=bzpopmin",
    # A named Node worker of `newsletters`.
    "id=32 addr=10.0.0.6:41000 fd=17 name=bull:bmV3c2xldHRlcnM=:w:sender-a age=9 idle=0 "
    "flags=N db=0 cmd=evalsha",
    "id=33 addr=10.0.0.6:41001 fd=18 name=bull:bmV3c2xldHRlcnM=:w:sender-a age=9 idle=0 "
    "flags=b db=0 cmd=bzpopmin",
    # Node QueueEvents: not a worker.
    "id=40 addr=10.0.0.5:41100 fd=19 name=bull:ZW1haWxz:qe age=300 idle=0 flags=b db=0 "
    "cmd=xread",
    # Another prefix, an unnamed client, the dashboard: not ours.
    "id=50 addr=127.0.0.1:50500 fd=20 name=other:emails age=5 idle=0 flags=N db=0 cmd=evalsha",
    "id=51 addr=127.0.0.1:50501 fd=21 name= age=5 idle=0 flags=N db=0 cmd=client|list",
    "",
])


def test_client_list_parser_finds_python_and_node_workers() -> None:
    clients = parse_client_list(CLIENT_LIST)
    assert len(clients) == 13
    workers = find_workers(clients, "bull")
    summary = sorted((w["queue"], w["language"], w["name"]) for w in workers)
    assert summary == [
        ("emails", "node", None),
        ("emails", "python", "host-42-1"),
        ("newsletters", "node", "sender-a"),
        ("reports", "python", None),
        ("reports", "python", None),
    ]
    python_emails = next(w for w in workers if w["name"] == "host-42-1")
    assert python_emails["connections"] == 2
    assert python_emails["addr"] == "127.0.0.1:50110"
    assert python_emails["age_s"] == 120 and python_emails["idle_s"] == 0
    node_emails = next(w for w in workers if w["language"] == "node" and w["queue"] == "emails")
    assert node_emails["addr"] == "10.0.0.5:41000" and node_emails["client_name"] == \
        "bull:ZW1haWxz"


def test_client_list_parser_filters_by_queue_and_prefix() -> None:
    clients = parse_client_list(CLIENT_LIST)
    emails = find_workers(clients, "bull", "emails")
    assert sorted(w["language"] for w in emails) == ["node", "python"]
    assert find_workers(clients, "bull", "missing") == []
    others = find_workers(clients, "other")
    assert [(w["queue"], w["language"]) for w in others] == [("emails", "python")]


def test_client_list_parser_prefers_a_known_python_queue_over_base64() -> None:
    # "dGVzdA==" is base64 of "test"; when a Python queue is really called that, it wins.
    line = "id=1 addr=127.0.0.1:1 fd=5 name=bull:dGVzdA== age=1 idle=0 flags=N db=0"
    assert find_workers(parse_client_list(line), "bull")[0]["queue"] == "test"
    known = find_workers(parse_client_list(line), "bull", known_queues={"dGVzdA=="})
    assert known[0]["queue"] == "dGVzdA==" and known[0]["language"] == "python"


def test_a_named_worker_with_a_third_pooled_connection_is_one_worker() -> None:
    # A worker's main client is a pool: a job's log line while the job runs opens a third
    # connection under the same name. Pairing connections two by two made that two workers.
    lines = [
        f"id={i} addr=127.0.0.1:5011{i} fd={i} name=bull:emails:w:host-42-1 age={100 - i} "
        f"idle={i} flags=N db=0 cmd=evalsha" for i in range(3)
    ]
    workers = find_workers(parse_client_list("\n".join(lines)), "bull", "emails")
    assert len(workers) == 1
    assert workers[0]["connections"] == 3
    assert workers[0]["age_s"] == 100 and workers[0]["idle_s"] == 0


def test_bullmq_still_reads_its_lua_text_afresh_for_every_handle() -> None:
    """The bug `share_lua_script_text` covers: bullmq's own loader returns a new copy of a
    script's text on every call (one per queue handle). If a bullmq upgrade shares it, this
    fails and the workaround can go."""
    from bullmq import redis_connection

    load = redis_connection.loadScript.__wrapped__  # bullmq's loader, under our cache
    first, second = load("addStandardJob-9.lua"), load("addStandardJob-9.lua")
    assert first == second and first is not second


async def test_queue_handles_share_one_copy_of_the_lua_scripts(stack: Stack) -> None:
    """1,000 queues held ~300 MB of identical script text in the dashboard; with the text
    shared, a handle costs a few KB."""
    import tracemalloc

    queues = stack.queues
    queues.handles.handle("warm-up")  # the scripts' one copy, read by the first handle
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(100):
        queues.handles.handle(f"tenant-{i}")
    grown = sum(stat.size_diff for stat in
                tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert grown / 100 < 60_000, f"{grown / 100:,.0f} bytes per queue handle"
