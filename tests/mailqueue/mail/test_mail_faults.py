"""Faults with a real worker process and a real SMTP sink: the server down then up, a 550
for one recipient, a worker SIGKILLed in the middle of 1,000 sends."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.mail_support import failed_once
from tests.waiting import eventually

from .worker_process import WorkerProcess

NOTIFY = {"title": "Disk full", "message": "Free some space"}


@pytest.fixture
async def big_sink(redis_client: aioredis.Redis, prefix: str) -> AsyncIterator[MailSink]:
    server = MailSink(redis_client, prefix, max_messages=10_000)
    await server.start()
    yield server
    await server.stop()


async def message_ids(sink: MailSink) -> collections.Counter[str]:
    return collections.Counter(m["message_id"] for m in await sink.outbox.list_messages(10_000))


async def drained(mail: MailManager) -> bool:
    counts = await mail.queues.get_job_counts("emails")
    return sum(counts.get(s, 0) for s in ("waiting", "active", "delayed", "prioritized")) == 0


async def test_smtp_down_then_up_every_message_delivered_once(
    mail: MailManager, big_sink: MailSink, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    await mail.create_queue("emails")
    await big_sink.stop()  # the server is down when the jobs run
    jobs = await mail.add_jobs("emails", [
        {"name": "send-notification", "data": {**NOTIFY, "to": f"u{i}@example.com"},
         "opts": {"attempts": 20, "backoff": {"type": "fixed", "delay": 300}}}
        for i in range(20)
    ])
    worker = WorkerProcess(tmp_path, redis_url, prefix, big_sink.url)
    try:
        await worker.wait_ready(mail)
        await failed_once(mail, "emails", [str(job.id) for job in jobs])  # the server is down
        assert await big_sink.outbox.count() == 0
        await big_sink.start()
        await eventually(lambda: drained(mail), 30)
    finally:
        worker.stop()
    for job in jobs:
        info = await mail.queues.get_job("emails", str(job.id))
        assert info["state"] == "completed", info
        assert info["attempts_made"] >= 1  # it was retried
    ids = await message_ids(big_sink)
    assert sorted(ids) == sorted(f"<emails.{job.id}@localhost>" for job in jobs)
    assert set(ids.values()) == {1}


async def test_550_for_one_recipient_fails_that_job_only(
    mail: MailManager, big_sink: MailSink, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    big_sink.fail_recipient("gone@example.com", 550)
    await mail.create_queue("emails")
    addresses = [f"u{i}@example.com" for i in range(9)] + ["gone@example.com"]
    jobs = await mail.add_jobs("emails", [
        {"name": "send-notification", "data": {**NOTIFY, "to": address},
         "opts": {"attempts": 5}} for address in addresses
    ])
    worker = WorkerProcess(tmp_path, redis_url, prefix, big_sink.url)
    try:
        await worker.wait_ready(mail)
        await eventually(lambda: drained(mail), 20)
    finally:
        worker.stop()
    states = {}
    for job in jobs:
        info = await mail.queues.get_job("emails", str(job.id))
        states[job.data["to"]] = info
    bad = states.pop("gone@example.com")
    assert bad["state"] == "failed" and "550" in bad["failed_reason"]
    assert bad["attempts_made"] == 1  # unrecoverable: no retry
    assert all(info["state"] == "completed" for info in states.values())
    delivered = sorted(m["envelope_to"][0] for m in await big_sink.outbox.list_messages(100))
    assert delivered == sorted(states)


async def test_worker_sigkilled_mid_way_through_1000_sends(
    mail: MailManager, big_sink: MailSink, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    total, concurrency = 1000, 20
    started = time.monotonic()
    await mail.create_queue("emails")
    opts = {"attempts": 60, "backoff": {"type": "fixed", "delay": 1000}}
    jobs = []
    for start in range(0, total, 250):
        jobs += await mail.add_jobs("emails", [
            {"name": "send-notification", "data": {**NOTIFY, "to": f"u{i}@example.com"},
             "opts": opts} for i in range(start, start + 250)
        ])
    # Short locks so a dead worker's jobs come back in seconds, not 30 s.
    env = {"WORKER_LOCK_DURATION_MS": "2000", "WORKER_STALLED_INTERVAL_MS": "1000"}
    first = WorkerProcess(tmp_path, redis_url, prefix, big_sink.url, concurrency, **env)
    second: WorkerProcess | None = None
    try:
        await first.wait_ready(mail)

        async def some_sent() -> bool:
            return await big_sink.outbox.count() >= total * 3 // 10

        await eventually(some_sent, 30)
        first.kill()
        at_kill = await big_sink.outbox.count()
        assert at_kill < total, "the worker finished before it was killed"
        second = WorkerProcess(tmp_path, redis_url, prefix, big_sink.url, concurrency, **env)
        await second.wait_ready(mail)

        async def all_delivered() -> bool:
            return len(await message_ids(big_sink)) == total and await drained(mail)

        # Jobs that were mid-send come back once their lock expires; their send claim ends
        # with that lock (docs/mail.md), so they go out within seconds.
        await eventually(all_delivered, 50)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    ids = await message_ids(big_sink)
    duplicates = sum(count - 1 for count in ids.values())
    print(f"\nSIGKILL after {at_kill} of {total} sent; delivered {len(ids)} distinct, "
          f"{duplicates} duplicate(s); {time.monotonic() - started:.1f} s")
    assert set(ids) == {f"<emails.{job.id}@localhost>" for job in jobs}
    counts = await mail.queues.get_job_counts("emails")
    assert counts.get("failed", 0) == 0
    # The one window left (killed after the server accepted, before the record was written)
    # can only hit jobs that were in flight at the kill.
    assert duplicates <= concurrency
