"""The four e-mail flows, each run end to end by a real worker through the SMTP sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from mailqueue.mail.flow_conditions import evaluate_conditions
from mailqueue.mail.flow_handlers import MailHandlers, create_flow_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from mailqueue.workers import WorkerManager

from .conftest import received

ARTICLES = [{"title": "New pool", "summary": "Faster", "url": "https://x.example/1"}]


@pytest.fixture
async def handlers(mail: MailManager, sink: MailSink) -> AsyncIterator[MailHandlers]:
    handlers = create_flow_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    await mail.create_queue("emails")
    mail.start_worker("emails", handlers, concurrency=10)
    yield handlers
    await mail.stop_worker("emails")
    await handlers.close()


async def settled(mail: MailManager, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = await mail.queues.get_job("emails", job_id)
        if info["state"] in ("completed", "failed"):
            return dict(info)
        assert time.monotonic() < deadline, f"job {job_id} still {info['state']}"
        await asyncio.sleep(0.05)


def test_one_worker_serves_every_handler() -> None:
    names = set(WorkerManager.create_email_handlers())
    assert {"send-welcome", "send-email", "validate-email", "render-email", "send-rendered",
            "newsletter-batch", "newsletter-summary", "check-condition", "conditional-send",
            "retry-send", "fallback-send", "retry-summary"} <= names


async def test_email_flow_validates_renders_then_sends(
    mail: MailManager, handlers: MailHandlers, sink: MailSink
) -> None:
    flow = await mail.flows.create_email_flow(
        "welcome", "Zoë Ångström <zoe@example.com>", name="Zoë"
    )
    assert [c["name"] for c in flow["tree"]["children"]] == ["render-email"]
    root = await settled(mail, flow["job_id"])
    assert root["state"] == "completed"
    result = root["return_value"]
    assert result["accepted"] == ["zoe@example.com"]
    assert result["subject"] == "Welcome to mailqueue, Zoë!"
    tree = await mail.flows.get_flow("emails", flow["job_id"])
    render = tree["children"][0]
    validate = render["children"][0]
    assert (render["name"], validate["name"]) == ("render-email", "validate-email")
    assert validate["return_value"]["envelope"]["to"] == [
        {"email": "zoe@example.com", "name": "Zoë Ångström"}
    ]
    assert render["return_value"]["subject"] == result["subject"]
    # Each step ran after the one below it.
    assert validate["finished_on"] <= render["processed_on"]
    assert render["finished_on"] <= tree["processed_on"]
    [got] = await received(sink)
    assert got["Message-ID"] == result["message_id"]
    assert str(got["Subject"]) == "Welcome to mailqueue, Zoë!"
    assert got["To"].addresses[0].display_name == "Zoë Ångström"


async def test_email_flow_with_bad_data_fails_at_validation_and_sends_nothing(
    mail: MailManager, handlers: MailHandlers, sink: MailSink
) -> None:
    # no `reset_url`
    flow = await mail.flows.create_email_flow("reset-password", "ada@example.com")
    root = await settled(mail, flow["job_id"])
    assert root["state"] == "failed"
    tree = await mail.flows.get_flow("emails", flow["job_id"])
    validate = tree["children"][0]["children"][0]
    assert validate["state"] == "failed" and "'reset_url'" in validate["failed_reason"]
    assert await sink.outbox.count() == 0


async def test_newsletter_flow_sends_in_batches_and_summarises(
    mail: MailManager, handlers: MailHandlers, sink: MailSink
) -> None:
    sink.fail_recipient("gone@example.com", 550)
    recipients = (f"reader{i}@example.com" for i in range(245))

    def with_bad() -> Any:
        yield from recipients
        yield "gone@example.com"
        yield "not-an-address"
        yield {"email": "zoe@example.com", "name": "Zoë"}

    flow = await mail.flows.create_newsletter_flow(
        {"campaign": "Spring 🌷 news", "articles": ARTICLES,
         "unsubscribe_url": "https://x.example/u?e={email}"},
        with_bad(), batch_size=100, batches_per_call=2,
    )
    assert flow["batches"] == 3 and flow["recipients"] == 248
    root = await settled(mail, flow["job_id"], timeout=30)
    assert root["state"] == "completed"
    summary = root["return_value"]
    assert (summary["sent"], summary["failed"], summary["skipped"]) == (246, 1, 1)
    assert summary["batches"] == 3 and summary["recipients"] == 248
    kinds = {f["email"]: f["kind"] for f in summary["failures"]}
    assert kinds == {"gone@example.com": "failed", "not-an-address": "skipped"}
    assert await sink.outbox.count() == 246
    messages = await sink.outbox.list_messages(300)
    assert len({m["message_id"] for m in messages}) == 246
    [zoe] = [m for m in messages if m["envelope_to"] == ["zoe@example.com"]]
    full = await sink.outbox.get_message(zoe["id"])
    assert full is not None and full["subject"] == "Spring 🌷 news"
    assert ("List-Unsubscribe", "<https://x.example/u?e=zoe%40example.com>") in full["headers"]


async def test_newsletter_summary_waits_for_every_batch(
    mail: MailManager, handlers: MailHandlers, sink: MailSink
) -> None:
    # Batches are enqueued while the worker runs: early batches finishing must not let the
    # summary run before the last batch was even added.
    async def slow() -> Any:
        for i in range(30):
            yield f"r{i}@example.com"

    recipients = [r async for r in slow()]

    def trickle() -> Any:
        for index, address in enumerate(recipients):
            if index % 10 == 0:
                time.sleep(0.05)
            yield address

    flow = await mail.flows.create_newsletter_flow(
        {"campaign": "Small", "articles": ARTICLES}, trickle(), batch_size=5, batches_per_call=1
    )
    root = await settled(mail, flow["job_id"])
    assert root["return_value"]["sent"] == 30 and root["return_value"]["batches"] == 6


@pytest.mark.parametrize(
    ("context", "sent", "reason"),
    [
        ({"user": {"plan": "pro"}, "opt_in": True}, True, "all 2 condition(s) met"),
        ({"user": {"plan": "free"}, "opt_in": True}, False, "user.plan is 'free', not 'pro'"),
        ({"user": {"plan": "pro"}}, False, "opt_in is missing"),
    ],
)
async def test_conditional_flow_sends_or_skips_with_the_reason(
    context: dict[str, Any], sent: bool, reason: str,
    mail: MailManager, handlers: MailHandlers, sink: MailSink,
) -> None:
    flow = await mail.flows.create_conditional_flow(
        "notification", "ops@example.com", title="Disk full", message="Free some space",
        conditions=[{"field": "user.plan", "equals": "pro"}, {"field": "opt_in", "exists": True}],
        context=context,
    )
    root = await settled(mail, flow["job_id"])
    assert root["state"] == "completed"
    result = root["return_value"]
    assert (result["sent"], result["reason"]) == (sent, reason)
    assert await sink.outbox.count() == (1 if sent else 0)


async def test_conditional_flow_skips_when_checked_too_late(
    mail: MailManager, handlers: MailHandlers, sink: MailSink
) -> None:
    flow = await mail.flows.create_conditional_flow(
        "notification", "ops@example.com", title="t", message="m",
        not_after=int(time.time() * 1000) - 1000,
    )
    result = (await settled(mail, flow["job_id"]))["return_value"]
    assert result["skipped"] is True and result["reason"].startswith("too late")


def test_conditions() -> None:
    check = {"conditions": [{"field": "c", "in": ["FR", "BE"]}, {"field": "n", "not_equals": 0}],
             "context": {"c": "FR", "n": 0}}
    assert evaluate_conditions(check) == {"send": False, "reason": "n is 0"}


async def test_retry_flow_transient_failures_back_off_then_the_primary_delivers(
    mail: MailManager, handlers: MailHandlers, sink: MailSink
) -> None:
    sink.fail_recipient("busy@example.com", 451, times=2)
    flow = await mail.flows.create_retry_flow(
        "notification", "busy@example.com", title="t", message="m", attempts=5,
        backoff={"type": "exponential", "delay": 100}, admin="admin@example.com",
    )
    root = await settled(mail, flow["job_id"])
    result = root["return_value"]
    assert result["delivered_by"] == "primary" and result["accepted"] == ["busy@example.com"]
    tree = await mail.flows.get_flow("emails", flow["job_id"])
    primary = tree["children"][0]["children"][0]
    assert primary["name"] == "retry-send" and primary["attempts_made"] == 3
    [got] = await received(sink)
    assert got["To"].addresses[0].addr_spec == "busy@example.com"


async def test_retry_flow_permanent_failure_goes_to_the_second_transport(
    mail: MailManager, handlers: MailHandlers, sink: MailSink,
    redis_client: aioredis.Redis, prefix: str,
) -> None:
    sink.fail_recipient("strict@example.com", 550)
    async with MailSink(redis_client, f"{prefix}-backup", register=False) as backup:
        flow = await mail.flows.create_retry_flow(
            "notification", "strict@example.com", title="t", message="m", attempts=5,
            fallback_smtp_url=backup.url,
        )
        result = (await settled(mail, flow["job_id"]))["return_value"]
        assert result["delivered_by"] == "fallback-transport"
        assert result["primary_attempts"] == 1  # a 5xx is not retried
        assert "550" in result["primary_error"]
        assert await sink.outbox.count() == 0
        [got] = await received(backup)
        assert got["To"].addresses[0].addr_spec == "strict@example.com"


async def test_retry_flow_without_a_second_transport_notifies_the_admin(
    mail: MailManager, handlers: MailHandlers, sink: MailSink
) -> None:
    sink.fail_recipient("gone@example.com", 550)
    flow = await mail.flows.create_retry_flow(
        "welcome", "gone@example.com", name="Gone", admin="Admin <admin@example.com>",
    )
    result = (await settled(mail, flow["job_id"]))["return_value"]
    assert result["delivered_by"] == "admin-notification"
    assert result["accepted"] == ["admin@example.com"]
    [got] = await received(sink)
    assert "gone@example.com" in str(got["Subject"])
    body = got.get_body(("plain",))
    assert body is not None and "550" in body.get_content()
