"""Issue 13, points 1 and 2: the delivery log and the suppression list, through the real path
(jobs in the suite's Redis, the built-in handlers in a worker, SMTP to the development sink).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from mailqueue.desk import InvalidSearchError
from mailqueue.mail.message_log import Attempt, LogEntry, MessageLog, Retention
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.mail_support import email_worker, run_job
from tests.mailqueue.mail.conftest import received

QUEUE = "emails"
NOTIFY = {"title": "Disk full", "message": "Free some space"}


@pytest.fixture
async def worker(mail: MailManager, sink: MailSink) -> AsyncIterator[MailManager]:
    async with email_worker(mail, sink.url, QUEUE):
        yield mail


async def run(mail: MailManager, name: str, data: dict[str, Any], **opts: Any
              ) -> dict[str, Any]:
    return await run_job(mail, QUEUE, name, data, **opts)


async def test_every_attempt_is_logged_and_found_by_address_domain_and_message_id(
    worker: MailManager, sink: MailSink
) -> None:
    sink.fail_recipient("ada@example.com", 451, times=1)  # deferred once, then sent
    info = await run(worker, "send-reset-password",
                     {"to": "Ada <Ada@Example.com>", "name": "Ada",
                      "reset_url": "https://x.example/r"},
                     attempts=3, backoff={"type": "fixed", "delay": 50})
    assert info["state"] == "completed"
    message_id = info["return_value"]["message_id"]
    await run(worker, "send-notification", {**NOTIFY, "to": "bob@example.com"})
    await run(worker, "send-notification", {**NOTIFY, "to": "eve@elsewhere.org"})

    desk = worker.desk
    # "Did Ada get her reset e-mail?" — any case of her address.
    entries, cursor = await desk.search_messages(recipient="ADA@example.com")
    assert cursor is None
    assert [e["outcome"] for e in entries] == ["sent", "deferred"]  # newest first
    sent, deferred = entries
    assert sent["recipients"] == ["Ada@example.com"] and sent["code"] == 250  # as sent
    assert sent["template"] == "reset-password" and sent["subject"]
    assert sent["message_id"] == message_id and sent["queue"] == QUEUE
    assert sent["job_id"] == info["id"] and sent["attempt"] == 2
    assert deferred["code"] == 451 and "451" in deferred["reply"] and deferred["attempt"] == 1
    # A whole domain, and a Message-ID with or without its brackets.
    by_domain, _ = await desk.search_messages(recipient="@example.com")
    assert {r for e in by_domain for r in e["recipients"]} == {"Ada@example.com",
                                                             "bob@example.com"}
    assert len((await desk.search_messages(message_id=message_id.strip("<>")))[0]) == 2
    assert [e["id"] for e in await desk.job_messages(QUEUE, info["id"])] == [
        sent["id"], deferred["id"]]
    assert await desk.message(sent["id"]) == sent
    # Filters, and pages that follow one another without overlap.
    only_deferred, _ = await desk.search_messages(outcome="deferred")
    assert [e["id"] for e in only_deferred] == [deferred["id"]]
    first, cursor = await desk.search_messages(limit=2)
    assert cursor is not None
    rest, end = await desk.search_messages(limit=2, before=cursor)
    assert end is None
    assert len({e["id"] for e in first + rest}) == 4


async def test_a_permanent_refusal_suppresses_the_address_and_later_jobs_do_not_send(
    worker: MailManager, sink: MailSink
) -> None:
    sink.fail_recipient("gone@example.com", 550)
    failed = await run(worker, "send-notification", {**NOTIFY, "to": "gone@example.com"})
    assert failed["state"] == "failed" and "550" in failed["failed_reason"]
    entry = await worker.desk.suppressions.get("GONE@example.com")
    assert entry is not None and entry.reason == "bounce" and entry.code == 550
    assert "No such user" in entry.reply and entry.by == "smtp"

    sink.clear_faults()  # even if the server would take it now: suppressed
    info = await run(worker, "send-notification", {**NOTIFY, "to": "gone@example.com"})
    assert info["state"] == "completed"
    result = info["return_value"]
    assert result["outcome"] == "suppressed" and result["accepted"] == []
    assert result["suppressed"] == {"gone@example.com": "bounce"}
    assert "No such user" in result["response"]
    assert await received(sink, n=0) == []
    outcomes = [e["outcome"] for e in
                (await worker.desk.search_messages(recipient="gone@example.com"))[0]]
    assert outcomes == ["suppressed", "failed"]
    assert (await worker.desk.suppressions.counts())["bounce"] == 1


async def test_some_recipients_suppressed_the_others_get_it(
    worker: MailManager, sink: MailSink
) -> None:
    await worker.desk.suppress("no@example.com", actor="ops", note="asked by phone")
    info = await run(worker, "send-notification",
                     {**NOTIFY, "to": "yes@example.com, no@example.com"})
    assert info["state"] == "completed"
    assert info["return_value"]["accepted"] == ["yes@example.com"]
    assert info["return_value"]["suppressed"] == {"no@example.com": "manual"}
    [got] = await received(sink)
    assert [a.addr_spec for a in got["To"].addresses] == ["yes@example.com",
                                                          "no@example.com"]
    outbox = await sink.outbox.list_messages(10)
    assert outbox[0]["envelope_to"] == ["yes@example.com"]  # the envelope skips no@


async def test_transactional_templates_ignore_the_list_and_operators_changes_are_audited(
    worker: MailManager, sink: MailSink
) -> None:
    desk = worker.desk
    assert await desk.suppress("ada@example.com", actor="ops", reason="manual", note="test")
    assert not await desk.suppress("ada@example.com", actor="ops")  # idempotent
    reset = await run(worker, "send-reset-password",
                      {"to": "ada@example.com", "name": "Ada",
                       "reset_url": "https://x.example/r"})
    assert reset["return_value"]["accepted"] == ["ada@example.com"]  # it must go
    welcome = await run(worker, "send-welcome", {"to": "ada@example.com", "name": "Ada"})
    assert welcome["return_value"]["outcome"] == "suppressed"
    removed = await desk.remove_suppression("Ada@example.com", actor="ops")
    assert removed is not None and removed.note == "test"
    assert await desk.remove_suppression("ada@example.com", actor="ops") is None
    audit = [(e["actor"], e["action"], e["target"], e["result"])
             for e in await worker.get_audit_log(10)]
    assert ("ops", "suppress", "ada@example.com", "ok") in audit
    assert ("ops", "suppress", "ada@example.com", "already") in audit
    assert ("ops", "unsuppress", "ada@example.com", "ok") in audit
    counts = await desk.suppressions.counts()
    assert counts == {"bounce": 0, "unsubscribe": 0, "manual": 0, "complaint": 0}


async def test_the_log_stays_within_its_bounds_with_its_indexes(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    log = MessageLog(redis_client, f"{prefix}-bounded", Retention(max_entries=120))
    for i in range(0, 400, 20):
        await log.write([
            (LogEntry("sent", [f"u{j}@example.com"], 250, "250 OK"),
             Attempt(f"<m{j}@x>", "q", str(j), 1, "welcome", "Hi"))
            for j in range(i, i + 20)])
    count = await log.count()
    assert 70 <= count <= 120
    _stream, by_address, by_domain, by_id = log.keys
    assert await redis_client.zcard(by_address) == count
    assert await redis_client.zcard(by_domain) == count
    assert await redis_client.zcard(by_id) == count
    newest, _ = await log.search(recipient="u399@example.com")
    assert [e["job_id"] for e in newest] == ["399"]
    assert (await log.search(recipient="u0@example.com"))[0] == []  # trimmed, index too

    aged = MessageLog(redis_client, f"{prefix}-aged", Retention(max_age_days=0.2 / 86_400))
    await aged.write([(LogEntry("sent", ["old@example.com"], 250, "250 OK"),
                       Attempt("<old@x>", "q", "1", 1, None, "Old"))])
    await asyncio.sleep(0.3)  # the entry's age is what is tested: it must pass 0.2 s
    await aged.write([(LogEntry("sent", ["new@example.com"], 250, "250 OK"),
                       Attempt("<new@x>", "q", "2", 1, None, "New"))])
    assert [e["recipients"] for e in (await aged.search())[0]] == [["new@example.com"]]
    assert await redis_client.zcard(aged.keys[1]) == 1


@pytest.mark.parametrize("filters", [
    {"outcome": "bounced"}, {"before": "yesterday"}, {"limit": 0},
    {"recipient": "a b@example.com"},
])
async def test_bad_searches_say_what_is_wrong(mail: MailManager, filters: dict[str, Any]
                                              ) -> None:
    with pytest.raises(InvalidSearchError):
        await mail.desk.search_messages(**filters)
