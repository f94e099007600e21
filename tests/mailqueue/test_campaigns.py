"""Issue 13, point 4: campaigns — a template to many recipients, with progress, pause,
resume, cancel, and a pause of its own after send errors in a row. Real Redis, real
workers (the built-in handlers), the development SMTP sink."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailqueue.campaigns import CampaignError
from mailqueue.mail.handlers import EmailHandlers
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.mail_support import campaign_handlers
from tests.waiting import eventually

NEWS = {"campaign": "Spring news", "intro": "Hello"}


@pytest.fixture
async def handlers(mail: MailManager, sink: MailSink) -> AsyncIterator[EmailHandlers]:
    async with campaign_handlers(mail, sink.url) as made:
        yield made


async def test_a_campaign_sends_to_each_recipient_once_and_reports_progress(
    mail: MailManager, sink: MailSink, handlers: EmailHandlers
) -> None:
    await mail.desk.suppress("opted-out@example.com", actor="test")
    recipients: list[Any] = [f"u{i}@example.com" for i in range(25)]
    recipients += [{"email": "ada@example.com", "name": "Ada Lovelace"},
                   "Bob <bob@example.com>", "opted-out@example.com",
                   "not an address", {"email": ""}, {"name": "no address"}]
    batches: list[tuple[int, int]] = []
    campaign = await mail.campaigns.create(
        "newsletter", recipients, variables=NEWS, name="Spring", batch=10,
        on_batch=lambda done, bad: batches.append((done, bad)))
    assert campaign["total"] == 28 and campaign["invalid"] == 2  # the blank one is skipped
    assert any("not an address" in r for r in campaign["invalid_reasons"])
    assert batches[0] == (10, 0) and batches[-1] == (28, 2)  # read and sent in batches

    mail.serve_campaigns(handlers)
    done = await eventually(lambda: _finished(mail, campaign["id"]))
    assert done["state"] == "completed" and done["remaining"] == 0
    assert (done["sent"], done["suppressed"], done["failed"]) == (27, 1, 0)
    assert done["done"] == 28 and done["rate"] > 0
    outbox = await sink.outbox.list_messages(100)
    to = sorted(a for m in outbox for a in m["envelope_to"])
    assert len(to) == 27 and len(set(to)) == 27 and "opted-out@example.com" not in to
    ada = next(m for m in outbox if m["envelope_to"] == ["ada@example.com"])
    body = (await sink.outbox.get_message(ada["id"]))
    assert body is not None and "Ada Lovelace" in body["text"]
    # Each send is in the delivery log under the campaign.
    entries, _ = await mail.desk.search_messages(recipient="ada@example.com")
    assert entries[0]["campaign"] == campaign["id"] and entries[0]["outcome"] == "sent"
    assert (await mail.campaigns.list())[0]["id"] == campaign["id"]  # newest first


async def _finished(mail: MailManager, campaign_id: str) -> dict[str, Any] | None:
    campaign = await mail.campaigns.get(campaign_id)
    return campaign if campaign["state"] in ("completed", "cancelled") else None


async def test_pause_resume_and_cancel_never_remove_what_is_in_flight(
    mail: MailManager, sink: MailSink, handlers: EmailHandlers
) -> None:
    campaign = await mail.campaigns.create(
        "newsletter", [f"p{i}@example.com" for i in range(40)], variables=NEWS)
    paused = await mail.campaigns.pause(campaign["id"], "by the test")
    assert paused["state"] == "paused" and paused["reason"] == "by the test"
    mail.serve_campaigns(handlers, concurrency=2)
    await eventually(lambda: _serving(mail, campaign["id"]))
    assert await sink.outbox.count() == 0  # paused: nothing goes
    sink.reply_delay_s, sink.reply_delay_commands = 0.3, ("DATA",)
    resumed = await mail.campaigns.resume(campaign["id"])
    assert resumed["state"] == "running"
    await eventually(lambda: _active_at_least(mail, campaign["queue"], 2))
    cancelled = await mail.campaigns.cancel(campaign["id"])
    assert cancelled["state"] == "cancelled"
    # The two in flight finish and are sent; nothing else is.
    final = await eventually(lambda: _settled(mail, campaign["id"]))
    assert final["remaining"] == 0 and 2 <= final["sent"] <= 4
    assert await sink.outbox.count() == final["sent"]
    with pytest.raises(CampaignError, match="cancelled"):
        await mail.campaigns.resume(campaign["id"])


async def _serving(mail: MailManager, campaign_id: str) -> bool:
    return any(w.queue == f"campaign-{campaign_id}" for w in mail.workers.workers())


async def _active_at_least(mail: MailManager, queue: str, n: int) -> bool:
    return (await mail.queues.get_job_counts(queue))["active"] >= n


async def _settled(mail: MailManager, campaign_id: str) -> dict[str, Any] | None:
    campaign = await mail.campaigns.get(campaign_id)
    return campaign if campaign["remaining"] == 0 else None


async def test_a_campaign_pauses_itself_after_send_errors_in_a_row(
    mail: MailManager, sink: MailSink, handlers: EmailHandlers
) -> None:
    addresses = [f"e{i}@example.com" for i in range(60)]
    for address in addresses:
        sink.fail_recipient(address, 554, "Relay access denied")
    campaign = await mail.campaigns.create("newsletter", addresses, variables=NEWS,
                                           error_limit=5)
    mail.serve_campaigns(handlers, concurrency=2)
    paused = await eventually(lambda: _paused(mail, campaign["id"]))
    found = re.search(r"after (\d+) send errors in a row", paused["reason"])
    assert found is not None and int(found[1]) >= 5, paused["reason"]
    settled = await eventually(lambda: _quiet(mail, campaign["queue"]))
    failed = (await mail.campaigns.get(campaign["id"]))["failed"]
    assert 5 <= failed <= 8 and settled  # stopped, not burnt through the list
    assert (await mail.campaigns.get(campaign["id"]))["remaining"] >= 50
    assert await sink.outbox.count() == 0


async def _paused(mail: MailManager, campaign_id: str) -> dict[str, Any] | None:
    campaign = await mail.campaigns.get(campaign_id)
    return campaign if campaign["state"] == "paused" else None


async def _quiet(mail: MailManager, queue: str) -> bool:
    return (await mail.queues.get_job_counts(queue))["active"] == 0


async def test_bad_campaigns_and_operations_say_what_is_wrong(mail: MailManager) -> None:
    with pytest.raises(CampaignError, match="template"):
        await mail.campaigns.create("", ["a@example.com"])
    with pytest.raises(CampaignError, match="no campaign"):
        await mail.campaigns.get("nope")
    campaign = await mail.campaigns.create("newsletter", ["a@example.com"], variables=NEWS)
    with pytest.raises(CampaignError, match="not paused"):
        await mail.campaigns.resume(campaign["id"])
