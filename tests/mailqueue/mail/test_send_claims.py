"""Send claims tied to the job's lock, the put-back, and at-most-once delivery (issue 11,
points 7 and 9), against real Redis, real bullmq jobs and locks, and the real sink."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Job, Queue, Worker

from mailqueue.bullmq_fixes import connection_options
from mailqueue.mail.delivery import Claim, DeliveryLog
from mailqueue.mail.errors import (
    DeliveryInProgressError,
    InvalidMailDataError,
    TemplateRenderError,
    UnconfirmedSendError,
)
from mailqueue.mail.handlers import MailService, create_email_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.mail.transport import SmtpTransport
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.waiting import eventually

NOTIFY = {"to": "ops@example.com", "title": "Disk full", "message": "Free some space"}


@pytest.fixture
async def locker(redis_url: str, prefix: str) -> AsyncIterator[Worker]:
    """A worker that is never run: getNextJob(token) locks a job the way a worker does,
    with a 500 ms lock that nobody renews (as if its process had died)."""
    async def never(job: Job, token: str) -> None:
        raise AssertionError("not run")

    worker = Worker("emails", never, {"connection": connection_options(redis_url),
                                      "prefix": prefix, "autorun": False,
                                      "lockDuration": 500})
    yield worker
    await worker.close(force=True)


async def test_a_claim_lasts_as_long_as_its_attempts_lock(
    queue: Queue, locker: Worker, redis_client: aioredis.Redis
) -> None:
    job = await queue.add("send-notification", NOTIFY, {})
    first = await locker.getNextJob("attempt-1")
    assert first is not None and first.token == "attempt-1"
    log = DeliveryLog(redis_client, queue.prefix)
    claim = await log.claim("<m1@x>", first)
    assert isinstance(claim, Claim) and claim.status == "claimed"

    second = await Job.fromId(queue, job.id)
    assert second is not None
    second.token = "attempt-2"  # a second run of the same job while the first holds the lock
    with pytest.raises(DeliveryInProgressError) as held:
        await log.claim("<m1@x>", second)
    assert 0 < held.value.retry_in_ms <= 500  # it runs again when that lock would end

    lock_key = f"{queue.qualifiedName}:{job.id}:lock"

    async def lock_gone() -> bool:
        return not await redis_client.exists(lock_key)

    await eventually(lock_gone)  # nobody renewed it: the first attempt is dead
    taken = await log.claim("<m1@x>", second)
    assert isinstance(taken, Claim) and taken.status == "taken"
    # The claim's own TTL is not what ends it (the lock is): no fixed 30 s left to wait.
    assert await redis_client.get(f"{queue.prefix}:__mailqueue__:sending:<m1@x>") \
        == "lock:attempt-2"


async def test_at_most_once_a_dead_attempts_claim_is_an_unconfirmed_send(
    queue: Queue, locker: Worker, redis_client: aioredis.Redis
) -> None:
    job = await queue.add("send-notification", NOTIFY, {})
    first = await locker.getNextJob("attempt-1")
    log = DeliveryLog(redis_client, queue.prefix)
    assert isinstance(await log.claim("<m2@x>", first, at_most_once=True), Claim)
    lock_key = f"{queue.qualifiedName}:{job.id}:lock"

    async def lock_gone() -> bool:
        return not await redis_client.exists(lock_key)

    await eventually(lock_gone)
    rerun = await Job.fromId(queue, job.id)
    assert rerun is not None
    rerun.token = "attempt-2"  # the stalled job's automatic re-run: attemptsMade unchanged
    for _ in range(2):  # again and again: never resent automatically
        with pytest.raises(UnconfirmedSendError, match=r"^unconfirmed send: .*mailbox"):
            await log.claim("<m2@x>", rerun, at_most_once=True)
    # The job failed (attemptsMade + 1); an operator retried it: that run may send.
    rerun.attemptsMade += 1
    claim = await log.claim("<m2@x>", rerun, at_most_once=True)
    assert isinstance(claim, Claim) and claim.status == "released"


async def test_a_live_claim_puts_the_job_back_without_spending_an_attempt(
    mail: MailManager, sink: MailSink, redis_client: aioredis.Redis, prefix: str
) -> None:
    """Before: DeliveryInProgressError failed the job (1 attempt). Now it is delayed until
    the claim ends, then sent, and attemptsMade counts the one real attempt."""
    await mail.create_queue("emails")
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    job = await mail.add_job("emails", "send-notification", NOTIFY, attempts=1)
    # Someone outside a worker is sending this message (a claim without a lock, 1.5 s).
    holder = DeliveryLog(redis_client, prefix, claim_ttl_ms=1500)
    assert isinstance(await holder.claim(f"<emails.{job.id}@localhost>"), Claim)
    mail.start_worker("emails", handlers, concurrency=1)
    try:
        async def done() -> bool:
            state = (await mail.queues.get_job("emails", job.id))["state"]
            return state in ("completed", "failed")

        await eventually(done)
    finally:
        await mail.stop_worker("emails")
        await handlers.close()
    info = await mail.queues.get_job("emails", job.id)
    assert info["state"] == "completed", info["failed_reason"]
    assert info["attempts_made"] == 1
    logs = await mail.queues.get_job_logs("emails", job.id)
    assert any("put back for" in line for line in logs)
    assert await sink.outbox.count() == 1


@pytest.fixture
async def slow_data_sink(redis_client: aioredis.Redis, prefix: str) -> AsyncIterator[MailSink]:
    server = MailSink(redis_client, prefix, reply_delay_s=2.0, reply_delay_commands=("DATA",))
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize("where", ["job data", "template settings.json"])
async def test_at_most_once_an_unknown_outcome_waits_for_an_operator(
    where: str, mail: MailManager, slow_data_sink: MailSink, tmp_path: Path,
) -> None:
    """The connection times out waiting for end-of-DATA's answer: at most once, the job
    fails at attempt 1 (of 5) as an unconfirmed send; the operator's retry sends it."""
    data: dict[str, Any] = dict(NOTIFY)
    settings = mail.settings.model_copy(update={"smtp_url": slow_data_sink.url})
    if where == "job data":
        data["delivery"] = "at-most-once"
    else:
        (tmp_path / "tpl" / "notification").mkdir(parents=True)
        (tmp_path / "tpl" / "notification" / "settings.json").write_text(
            json.dumps({"delivery": "at-most-once"}))
        settings = settings.model_copy(update={"mail_template_dir": str(tmp_path / "tpl")})
    transport = SmtpTransport(slow_data_sink.url + "&timeout=0.5&data_timeout=0.5")
    handlers = create_email_handlers(settings, transport=transport)
    await mail.create_queue("emails")
    job = await mail.add_job("emails", "send-notification", data, attempts=5,
                             backoff={"type": "fixed", "delay": 100})
    mail.start_worker("emails", handlers, concurrency=1)
    try:
        async def state_is(state: str) -> bool:
            return bool((await mail.queues.get_job("emails", job.id))["state"] == state)

        await eventually(lambda: state_is("failed"))
        info = await mail.queues.get_job("emails", job.id)
        assert info["attempts_made"] == 1  # not retried automatically
        reason = info["failed_reason"] or ""
        assert reason.startswith("unconfirmed send: <emails.")
        assert "check the recipient's mailbox / the outbox before retrying" in reason
        slow_data_sink.reply_delay_s = 0  # the operator looked: it never arrived
        await mail.queues.retry_job("emails", job.id)
        await eventually(lambda: state_is("completed"))
    finally:
        await mail.stop_worker("emails")
        await handlers.close()
        await transport.close()
    assert await slow_data_sink.outbox.count() == 1


def test_a_bad_delivery_setting_is_a_permanent_error(settings: Settings, tmp_path: Path
                                                     ) -> None:
    (tmp_path / "notification").mkdir()
    (tmp_path / "notification" / "settings.json").write_text('{"delivery": "twice"}')
    service = MailService(settings, template_dir=tmp_path)
    with pytest.raises(InvalidMailDataError, match=r"in notification/settings\.json must be"):
        service.delivery_mode(NOTIFY, "notification")
    (tmp_path / "notification" / "settings.json").write_text('{"retries": 1}')
    with pytest.raises(TemplateRenderError, match="delivery, ignore_suppressions only"):
        MailService(settings, template_dir=tmp_path).delivery_mode(NOTIFY, "notification")
    assert service.delivery_mode({**NOTIFY, "delivery": "at-least-once"},
                                 "notification") == "at-least-once"
