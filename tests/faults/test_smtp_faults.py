"""Scenario 3 of the fault suite: SMTP faults against real `mailqueue worker` processes.

The SMTP server is the development sink (aiosmtpd) in this test process, on a Redis of the
test's own; the worker is a separate process pointed at the sink by `SMTP_URL`. Each case
ends as docs/mail.md says: a 4xx, a refused connection or a timeout is retried with the
queue's backoff and then delivered; a 5xx fails the job at once with the server's reply as
the reason. Nothing is lost and nothing is sent twice: the Message-IDs in the outbox are
counted (each job's Message-ID is derived from its id, the same on every attempt).

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/<scenario>.json.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from mailqueue.redis_server import EmbeddedRedis
from tests.waiting import eventually

from .system import MailqueueProcess, own_redis, own_settings, start_worker

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"
QUEUE = "emails"
NOTIFY = {"title": "Disk full", "message": "Free some space"}
TRANSIENT_LOG = "transient failure, will be retried"


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print the figures of a scenario and keep them for docs/reliability.md."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{scenario}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@dataclass
class System:
    tmp_path: Path
    redis: EmbeddedRedis
    mail: MailManager
    sink: MailSink
    prefix: str

    async def worker(self, *, timeout_s: float = 10, pool: int = 5, concurrency: int = 10,
                     **env: str) -> MailqueueProcess:
        """A `mailqueue worker` process sending through the sink."""
        smtp_url = f"{self.sink.url}&timeout={timeout_s}&pool={pool}"
        return await asyncio.to_thread(
            start_worker, self.tmp_path, redis_url=self.redis.url, prefix=self.prefix,
            concurrency=concurrency, SMTP_URL=smtp_url, **env,
        )

    async def add(self, addresses: list[str], attempts: int, backoff_ms: int) -> list[str]:
        jobs = await self.mail.add_jobs(QUEUE, [
            {"name": "send-notification", "data": {**NOTIFY, "to": address},
             "opts": {"attempts": attempts, "backoff": {"type": "fixed", "delay": backoff_ms}}}
            for address in addresses
        ])
        return [str(job.id) for job in jobs]

    async def finished(self, n: int) -> bool:
        counts = await self.mail.queues.get_job_counts(QUEUE)
        return counts.get("completed", 0) + counts.get("failed", 0) >= n

    async def outbox_ids(self) -> collections.Counter[str]:
        messages = await self.sink.outbox.list_messages(10_000)
        return collections.Counter(m["message_id"] for m in messages)

    async def outcome(self, job_ids: list[str]
                      ) -> tuple[collections.Counter[str], dict[str, int], dict[str, list[str]]]:
        """After a run: the outbox's Message-IDs (with copies), the queue's counts, and each
        job's transient failures."""
        failures = {job_id: await self.transient_failures(job_id) for job_id in job_ids}
        return (await self.outbox_ids(), await self.mail.queues.get_job_counts(QUEUE),
                failures)

    def expected_ids(self, job_ids: list[str]) -> set[str]:
        return {f"<{QUEUE}.{job_id}@localhost>" for job_id in job_ids}

    async def transient_failures(self, job_id: str) -> list[str]:
        logs = await self.mail.queues.get_job_logs(QUEUE, job_id)
        lines = logs["logs"] if isinstance(logs, dict) else logs
        return [line for line in lines if TRANSIENT_LOG in line]


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    server = await asyncio.to_thread(own_redis, tmp_path / "redis")
    prefix = "smtpfaults"
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    settings = own_settings(server, prefix, tmp_path)
    sink = MailSink(client, prefix, max_messages=10_000)
    try:
        async with MailManager(settings) as mail:
            await mail.create_queue(QUEUE)
            await sink.start()
            yield System(tmp_path, server, mail, sink, prefix)
            await sink.stop()
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float,
                   what: str = "condition") -> float:
    """Poll until `predicate()`; returns the seconds it took."""
    started = time.monotonic()
    await eventually(predicate, timeout, what, interval=0.1)
    return time.monotonic() - started


async def test_smtp_down_30_s_then_up(system: System) -> None:
    """The server goes away in the middle of a run for 30 s; every job waits it out."""
    total, outage_s = 300, 30.0
    # Fixed 2 s backoff, 30 attempts: a job survives 60 s of refused connections, and
    # goes out within ~2 s of the server coming back.
    job_ids = await system.add([f"u{i}@example.com" for i in range(total)], 30, 2000)
    worker = await system.worker(concurrency=10)
    try:
        async def some_sent() -> bool:
            return await system.sink.outbox.count() >= 40

        await wait_for(some_sent, 30, "first deliveries")
        await system.sink.stop()
        down_at = time.monotonic()
        before_outage = await system.sink.outbox.count()
        assert before_outage < total, "every message went out before the outage"
        await asyncio.sleep(outage_s)  # the scenario: the SMTP server away this long
        during_outage = await system.sink.outbox.count() - before_outage
        counts_at_up = await system.mail.queues.get_job_counts(QUEUE)
        await system.sink.start()
        up_at = time.monotonic()
        recovery_s = await wait_for(lambda: system.finished(total), 60, "drained queue")
    finally:
        worker.stop()
    ids = await system.outbox_ids()
    counts = await system.mail.queues.get_job_counts(QUEUE)
    retried = [job_id for job_id in job_ids if await system.transient_failures(job_id)]
    sample = await system.transient_failures(retried[0]) if retried else []
    figures = {
        "jobs": total,
        "delivered_before_outage": before_outage,
        "outage_s": round(up_at - down_at, 1),
        "delivered_during_outage": during_outage,
        "delayed_at_restart": counts_at_up.get("delayed", 0),
        "jobs_retried": len(retried),
        "drain_after_restart_s": round(recovery_s, 1),
        "completed": counts.get("completed", 0),
        "failed": counts.get("failed", 0),
        "distinct_delivered": len(ids),
        "duplicates": sum(n - 1 for n in ids.values()),
        "lost": len(system.expected_ids(job_ids) - set(ids)),
    }
    report("smtp-down-30s", figures)
    assert during_outage == 0
    assert counts_at_up.get("delayed", 0) > 0, "no job was waiting out the outage"
    assert retried, "no job was retried"
    # A job that was mid-send at the stop says "lost during DATA"; the others, that the
    # server could not be reached.
    reasons = [line for job_id in retried[:20]
               for line in await system.transient_failures(job_id)]
    assert any("cannot reach SMTP server" in line for line in reasons), sample
    assert counts.get("completed", 0) == total and counts.get("failed", 0) == 0
    assert set(ids) == system.expected_ids(job_ids)
    assert figures["duplicates"] == 0


async def test_slow_server_within_the_timeout_delivers_once(system: System) -> None:
    """5 s before each RCPT and DATA reply, a 15 s SMTP timeout: slow, but no retry."""
    total, delay_s = 10, 5.0
    system.sink.reply_delay_s = delay_s
    job_ids = await system.add([f"slow{i}@example.com" for i in range(total)], 5, 1000)
    started = time.monotonic()
    worker = await system.worker(timeout_s=15, pool=total, concurrency=total)
    try:
        elapsed = await wait_for(lambda: system.finished(total), 60, "drained queue")
    finally:
        worker.stop()
    ids, counts, failures = await system.outcome(job_ids)
    figures = {
        "jobs": total,
        "reply_delay_s": delay_s,
        "smtp_timeout_s": 15,
        "seconds_to_drain": round(time.monotonic() - started, 1),
        "seconds_after_worker_ready": round(elapsed, 1),
        "retries": sum(len(f) for f in failures.values()),
        "completed": counts.get("completed", 0),
        "distinct_delivered": len(ids),
        "duplicates": sum(n - 1 for n in ids.values()),
    }
    report("smtp-slow-within-timeout", figures)
    assert counts.get("completed", 0) == total
    assert figures["retries"] == 0, failures
    assert set(ids) == system.expected_ids(job_ids)
    assert figures["duplicates"] == 0


async def test_slow_server_beyond_the_timeout_is_retried_and_delivers_once(
    system: System,
) -> None:
    """5 s per reply against a 2 s timeout: each send times out and is retried; once the
    server is fast again every message goes out, once."""
    total, delay_s, slow_for_s = 10, 5.0, 8.0
    system.sink.reply_delay_s = delay_s
    job_ids = await system.add([f"slower{i}@example.com" for i in range(total)], 20, 1000)
    worker = await system.worker(timeout_s=2, pool=total, concurrency=total)
    try:
        # The window in which nothing may go out: each attempt times out (2 s) and retries.
        await asyncio.sleep(slow_for_s)
        assert await system.sink.outbox.count() == 0
        system.sink.reply_delay_s = 0  # the server is fast again
        drain_s = await wait_for(lambda: system.finished(total), 60, "drained queue")
    finally:
        worker.stop()
    ids, counts, failures = await system.outcome(job_ids)
    sample = next(f for f in failures.values() if f)
    figures = {
        "jobs": total,
        "reply_delay_s": delay_s,
        "smtp_timeout_s": 2,
        "slow_for_s": slow_for_s,
        "timeouts_retried": sum(len(f) for f in failures.values()),
        "jobs_retried": sum(1 for f in failures.values() if f),
        "drain_after_recovery_s": round(drain_s, 1),
        "completed": counts.get("completed", 0),
        "distinct_delivered": len(ids),
        "duplicates": sum(n - 1 for n in ids.values()),
    }
    report("smtp-slow-beyond-timeout", figures)
    assert all(failures.values()), f"a job was not retried: {failures}"
    assert "Timed out" in sample[0] or "timed out" in sample[0], sample
    assert counts.get("completed", 0) == total and counts.get("failed", 0) == 0
    assert set(ids) == system.expected_ids(job_ids)
    assert figures["duplicates"] == 0


async def test_421_and_451_are_retried_550_fails_at_once(system: System) -> None:
    """Three recipients answer 421 (closing the session) or 451 twice, one answers 550
    for ever; the others are delivered at the first try."""
    sink = system.sink
    transient = {f"busy{i}@example.com": 421 for i in range(3)}
    transient |= {f"later{i}@example.com": 451 for i in range(3)}
    for address, code in transient.items():
        sink.fail_recipient(address, code, times=2)
    sink.fail_recipient("gone@example.com", 550)
    plain = [f"ok{i}@example.com" for i in range(20)]
    addresses = [*plain, *transient, "gone@example.com"]
    job_ids = await system.add(addresses, 5, 500)
    by_address = dict(zip(addresses, job_ids, strict=True))
    worker = await system.worker(concurrency=10)
    try:
        elapsed = await wait_for(lambda: system.finished(len(addresses)), 60, "drained queue")
    finally:
        worker.stop()
    info = {a: await system.mail.queues.get_job(QUEUE, j) for a, j in by_address.items()}
    failures = {a: await system.transient_failures(j) for a, j in by_address.items()}
    ids = await system.outbox_ids()
    delivered_to = collections.Counter(
        m["envelope_to"][0] for m in await sink.outbox.list_messages(10_000)
    )
    gone = info["gone@example.com"]
    figures = {
        "jobs": len(addresses),
        "seconds_to_drain": round(elapsed, 1),
        "retries_421": sum(len(failures[a]) for a, c in transient.items() if c == 421),
        "retries_451": sum(len(failures[a]) for a, c in transient.items() if c == 451),
        "attempts_550": gone["attempts_made"],
        "reason_550": gone["failed_reason"],
        "distinct_delivered": len(ids),
        "duplicates": sum(n - 1 for n in ids.values()),
    }
    report("smtp-421-451-550", figures)
    # 550: failed at once, the server's reply in the reason, never retried, never sent.
    assert gone["state"] == "failed", gone
    assert "550" in gone["failed_reason"] and "No such user" in gone["failed_reason"], gone
    assert gone["attempts_made"] == 1 and not failures["gone@example.com"]
    assert "gone@example.com" not in delivered_to
    # 421 and 451: two deferrals each, retried with backoff, then delivered.
    for address, code in transient.items():
        assert info[address]["state"] == "completed", info[address]
        assert len(failures[address]) == 2, (address, failures[address])
        assert all(str(code) in line for line in failures[address]), failures[address]
    for address in plain:
        assert info[address]["state"] == "completed" and not failures[address]
    # Nothing lost, nothing twice.
    assert set(delivered_to) == set(plain) | set(transient)
    assert set(delivered_to.values()) == {1}
    assert figures["duplicates"] == 0


async def test_sink_stop_answers_the_message_it_is_storing(system: System) -> None:
    """The outage above stops the sink while messages are in flight. A message the sink
    stored but never answered would be sent again by the retry and counted as a duplicate
    that the product did not make: stop() answers it before closing the session."""
    import aiosmtplib

    sink = system.sink
    add = sink.outbox.add

    storing = asyncio.Event()

    async def slow_add(*args: Any) -> str:
        storing.set()
        await asyncio.sleep(0.5)  # a slow Redis write: stop() comes in the middle of it
        return await add(*args)

    sink.outbox.add = slow_add  # type: ignore[method-assign]
    client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False, timeout=5)
    await client.connect()
    message = b"From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n"
    sending = asyncio.create_task(client.sendmail("a@example.com", ["b@example.com"], message))
    await asyncio.wait_for(storing.wait(), 5)
    await sink.stop()
    (outcome,) = await asyncio.gather(sending, return_exceptions=True)
    errors = outcome if isinstance(outcome, BaseException) else None
    client.close()
    assert await sink.outbox.count() == 1
    assert errors is None, f"stored, but the client was told {errors!r}: its retry is a copy"
