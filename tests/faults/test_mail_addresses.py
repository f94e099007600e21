"""Issue 11, points 4, 5 and 6: recipient lists, hostile display names, long body lines.

Every job goes through the real path: enqueued in the suite's Redis, run by a bullmq worker
with the built-in handlers, sent over SMTP to the development sink (aiosmtpd), read back
from the sink's outbox. Nothing is mocked; waits poll for the job's final state.

- 4: `to: "a, b"` / `"a; b"` delivered only the first address and completed. Each address
  must be delivered, the per-recipient RCPT replies returned, and a job with an unparseable
  or refused address must fail, naming it — without a retry mailing the accepted ones again.
- 5: `"Ada\\r\\nBcc: evil@example.com" <e2@example.com>` was delivered to evil@example.com
  (the lenient `parseaddr` gave up on the display name and kept the address inside it).
- 6: a body line over 998 characters went out unencoded and the server (our own sink too)
  answered "500 Line too long".

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/<scenario>.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailqueue.mail.outbox import OutboxSummary
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.mail_support import email_worker, settled

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"
QUEUE = "emails"
NOTIFY = {"title": "Disk full", "message": "Free some space"}


def report(scenario: str, figures: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{scenario}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
async def worker(mail: MailManager, sink: MailSink) -> AsyncIterator[MailManager]:
    """A bullmq worker in this process running the built-in handlers against the sink."""
    async with email_worker(mail, sink.url + "&timeout=20", QUEUE):
        yield mail


async def add(mail: MailManager, name: str, data: dict[str, Any]) -> str:
    job = await mail.add_job(QUEUE, name, data, attempts=3,
                             backoff={"type": "fixed", "delay": 100})
    return str(job.id)


async def outbox(sink: MailSink) -> list[OutboxSummary]:
    """The sink's messages, oldest first."""
    return list(reversed(await sink.outbox.list_messages(1000)))


async def parsed(sink: MailSink, summary: OutboxSummary) -> EmailMessage:
    full = await sink.outbox.get_message(summary["id"])
    assert full is not None
    message = message_from_bytes(full["raw"].encode(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


# --- 4. recipient lists ------------------------------------------------------------------------

LISTS: list[tuple[dict[str, Any], list[str], list[str]]] = [
    # (job fields, addresses in To, every envelope recipient)
    ({"to": "first@example.com, second@example.com"},
     ["first@example.com", "second@example.com"], ["first@example.com", "second@example.com"]),
    ({"to": "first@example.com; second@example.com"},
     ["first@example.com", "second@example.com"], ["first@example.com", "second@example.com"]),
    ({"to": '"Lovelace, Ada" <ada@example.com>; Bob <bob@example.com>,'},
     ["ada@example.com", "bob@example.com"], ["ada@example.com", "bob@example.com"]),
    ({"to": ["a@example.com", "B <b@example.com>, c@example.com"]},
     ["a@example.com", "b@example.com", "c@example.com"],
     ["a@example.com", "b@example.com", "c@example.com"]),
    ({"to": "t@example.com", "cc": "c1@example.com; c2@example.com",
      "bcc": "b1@example.com, Hidden <b2@example.com>"},
     ["t@example.com"],
     ["t@example.com", "c1@example.com", "c2@example.com", "b1@example.com", "b2@example.com"]),
]


async def test_every_address_of_a_list_string_is_delivered(
    worker: MailManager, sink: MailSink
) -> None:
    job_ids = [await add(worker, "send-notification", {**NOTIFY, **fields})
               for fields, _, _ in LISTS]
    infos = await settled(worker, QUEUE, job_ids)
    messages = await outbox(sink)
    by_id = {m["message_id"]: m for m in messages}  # the jobs ran concurrently
    assert len(by_id) == len(messages) == len(LISTS)
    for (fields, to, everyone), info in zip(LISTS, infos, strict=True):
        summary = by_id[f"<{QUEUE}.{info['id']}@localhost>"]
        assert info["state"] == "completed", (fields, info["failed_reason"])
        result = info["return_value"]
        assert result["accepted"] == everyone and result["rejected"] == []
        # The RCPT reply for each recipient, from the server.
        assert sorted(result["recipient_replies"]) == sorted(everyone)
        assert all(reply.startswith("250") for reply in result["recipient_replies"].values())
        assert summary["envelope_to"] == everyone
        got = await parsed(sink, summary)
        assert [a.addr_spec for a in got["To"].addresses] == to
        assert "Bcc" not in got and "b2@example.com" not in str(got)
    report("mail-address-lists", {
        "jobs": len(LISTS), "recipients": sum(len(e) for _, _, e in LISTS),
        "delivered": sum(len(m["envelope_to"]) for m in messages)})


@pytest.mark.parametrize(("fields", "named"), [
    ({"to": "ok@example.com, not an address"}, "not an address"),
    ({"to": "ok@example.com; second@@example.com"}, "second@@example.com"),
    ({"to": "ok@example.com second@example.com"}, "second@example.com"),
    ({"to": "ok@example.com", "cc": ["c@example.com", "c2@"]}, "c2@"),
    ({"to": "ok@example.com", "bcc": "b@example.com, <b2@example.com"}, "b2@example.com"),
])
async def test_an_unparseable_address_fails_the_job_naming_it(
    worker: MailManager, sink: MailSink, fields: dict[str, Any], named: str
) -> None:
    job_id = await add(worker, "send-notification", {**NOTIFY, **fields})
    [info] = await settled(worker, QUEUE, [job_id])
    assert info["state"] == "failed"
    assert info["attempts_made"] == 1  # permanent: not retried
    assert named in info["failed_reason"]
    assert await sink.outbox.count() == 0  # nobody got it, not even ok@example.com


async def test_a_refused_recipient_fails_the_job_and_a_retry_does_not_resend(
    worker: MailManager, sink: MailSink
) -> None:
    sink.fail_recipient("gone@example.com", 550)
    to = "a@example.com, gone@example.com, b@example.com"
    job_id = await add(worker, "send-notification", {**NOTIFY, "to": to})
    [info] = await settled(worker, QUEUE, [job_id])
    # The server took the message for a and b; gone was refused: failed, saying which.
    assert info["state"] == "failed" and info["attempts_made"] == 1
    assert "gone@example.com" in info["failed_reason"] and "550" in info["failed_reason"]
    [first] = await outbox(sink)
    assert first["envelope_to"] == ["a@example.com", "b@example.com"]

    # The 550 put gone@example.com on the suppression list, with the server's reply.
    entry = await worker.desk.suppressions.get("gone@example.com")
    assert entry is not None and entry.reason == "bounce" and entry.reply.startswith("550")

    # Retried: a and b are not mailed again, gone is suppressed: completed, nothing sent.
    await worker.queues.retry_job(QUEUE, job_id)
    [info] = await settled(worker, QUEUE, [job_id], 30, min_attempts=2)
    assert info["state"] == "completed", info["failed_reason"]
    assert info["return_value"]["suppressed"] == {"gone@example.com": "bounce"}
    assert info["return_value"]["accepted"] == ["a@example.com", "b@example.com"]
    assert len(await outbox(sink)) == 1

    # The mailbox exists now and an operator lifts the suppression: the retry mails
    # gone@example.com alone, and completes.
    sink.clear_faults()
    await worker.desk.remove_suppression("gone@example.com", actor="test")
    await worker.queues.retry_job(QUEUE, job_id)
    [info] = await settled(worker, QUEUE, [job_id], 30, min_attempts=3)
    assert info["state"] == "completed", info["failed_reason"]
    assert info["return_value"]["accepted"] == ["a@example.com", "b@example.com",
                                                "gone@example.com"]
    assert info["return_value"]["rejected"] == []
    first, second = await outbox(sink)
    assert second["envelope_to"] == ["gone@example.com"]
    assert second["message_id"] == first["message_id"]  # the same message, completed
    report("mail-partial-refusal", {
        "recipients": 3, "refused": 1, "failed_attempts": 1,
        "copies_to_accepted": 1, "copies_to_refused_after_fix": 1,
        "suppressed_by_the_refusal": 1})


# --- 5. strict parsing --------------------------------------------------------------------------

HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"to": '"Ada\r\nBcc: evil@example.com" <e2@example.com>'}, "control character"),
    ({"to": '"Ada\nBcc: evil@example.com" <e2@example.com>'}, "control character"),
    ({"to": "e2@example.com\r\nBcc: evil@example.com"}, "control character"),
    ({"to": {"email": "e2@example.com", "name": "Ada\r\nBcc: evil@example.com"}},
     "control character"),
    ({"to": "=?utf-8?q?Ada=0D=0ABcc=3A_evil=40example=2Ecom?= <e2@example.com>"},
     "control character"),
    ({"to": '"Ada\x00" <e2@example.com>'}, "control character"),
    ({"to": '"Ada <evil@example.com>'}, "quoted"),
    ({"to": "Ada <e2@example.com"}, "'>'"),
    ({"to": "e2@example.com", "cc": '"Ada\r\nBcc: evil@example.com" <c@example.com>'},
     "control character"),
    ({"to": "e2@example.com", "reply_to": "Ada\r\n <evil@example.com>"}, "control character"),
    ({"to": {"email": "Ada <evil@example.com>"}}, "evil@example.com"),
]


async def test_hostile_addresses_are_refused_and_nothing_is_sent(
    worker: MailManager, sink: MailSink
) -> None:
    job_ids = [await add(worker, "send-notification", {**NOTIFY, **fields})
               for fields, _ in HOSTILE]
    infos = await settled(worker, QUEUE, job_ids)
    reasons = []
    for (fields, expected), info in zip(HOSTILE, infos, strict=True):
        assert info["state"] == "failed", fields
        assert info["attempts_made"] == 1, fields  # permanent, not retried
        reason = info["failed_reason"]
        assert expected in reason, (fields, reason)
        assert "\r" not in reason and "\n" not in reason  # the value is shown escaped
        reasons.append(reason)
    assert await sink.outbox.count() == 0
    report("mail-hostile-addresses", {"jobs": len(HOSTILE), "refused": len(reasons),
                                      "sent": await sink.outbox.count()})


# --- 6. long lines ------------------------------------------------------------------------------


async def test_5_mb_single_line_html_arrives_byte_for_byte(
    worker: MailManager, sink: MailSink
) -> None:
    cell = '<td class="c" style="padding:4px;border:1px solid #ddd">row &amp; value=42</td>'
    html = "<!doctype html><html><body><table><tr>" + cell * (5_000_000 // len(cell)) \
        + "</tr></table></body></html>"
    assert "\n" not in html and len(html) >= 5_000_000
    started = time.monotonic()
    job_id = await add(worker, "send-email", {"to": "big@example.com", "subject": "Minified",
                                              "html": html, "text": "See the HTML part."})
    [info] = await settled(worker, QUEUE, [job_id], timeout=120)
    elapsed = time.monotonic() - started
    assert info["state"] == "completed", info["failed_reason"]
    [summary] = await outbox(sink)
    full = await sink.outbox.get_message(summary["id"])
    assert full is not None
    longest = max(len(line) for line in full["raw"].split("\r\n"))
    assert longest <= 998
    got = await parsed(sink, summary)
    part = got.get_body(("html",))
    assert part is not None
    assert part.get_content() == html  # decoded back to the very same HTML
    report("mail-long-lines", {"html_bytes": len(html), "wire_bytes": summary["size"],
                               "longest_line": longest, "seconds": round(elapsed, 2)})


LONG_WORDS = " ".join(f"word{i}" for i in range(300))  # ~2,400 characters, one line


@pytest.mark.parametrize(("name", "data"), [
    ("send-notification", {"to": "n@example.com", "title": "Long", "message": LONG_WORDS}),
    ("send-notification", {"to": "n@example.com", "title": "Lång", "message": "ü" + LONG_WORDS}),
    ("send-reset-password", {"to": "r@example.com",
                             "reset_url": "https://app.example/reset?t=" + "x" * 3000}),
    ("send-email", {"to": "t@example.com", "subject": "Plain", "text": "y" * 5000}),
])
async def test_templates_and_texts_with_long_lines_are_delivered(
    worker: MailManager, sink: MailSink, name: str, data: dict[str, Any]
) -> None:
    [info] = await settled(worker, QUEUE, [await add(worker, name, data)])
    assert info["state"] == "completed", info["failed_reason"]
    [summary] = await outbox(sink)
    got = await parsed(sink, summary)
    long_value = data.get("message") or data.get("reset_url") or data["text"]
    for kind in ("plain", "html"):
        part = got.get_body((kind,))
        if part is not None:
            assert long_value in part.get_content().replace("\r\n", "\n"), kind
