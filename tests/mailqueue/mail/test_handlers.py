from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from bullmq import Job, Queue
from bullmq.custom_errors import UnrecoverableError

from mailqueue.mail.handlers import create_email_handlers, html_to_text
from mailqueue.mail.sink import MailSink
from mailqueue.mail.transport import SmtpTransport
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.mail_support import email_worker, failed_once, settled

from .conftest import received

JOBS: dict[str, dict[str, Any]] = {
    "send-welcome": {"to": "Zoë Ångström <zoe@example.com>", "name": "Zoë",
                     "action_url": "https://app.example/start"},
    "send-newsletter": {
        "to": "reader@example.com", "campaign": "Spring 🌷 news",
        "articles": [{"title": "New pool", "summary": "Faster", "url": "https://x.example/1"}],
        "unsubscribe_url": "https://x.example/unsubscribe?u=1",
    },
    "send-reset-password": {"to": "ada@example.com",
                            "reset_url": "https://app.example/reset?t=abc"},
    "send-notification": {"to": "ops@example.com", "title": "Disk 91 % full",
                          "message": "Free some space"},
    "send-email": {"to": "bob@example.com", "subject": "Hi", "html": "<p>Hello <b>Bob</b></p>"},
}


@pytest.fixture
def handlers(settings: Settings, transport: SmtpTransport) -> Any:
    return create_email_handlers(settings, transport=transport)


async def run(handlers: Any, queue: Queue, name: str, data: Any, **opts: Any) -> tuple[Any, Job]:
    job = await queue.add(name, data, opts)
    return await handlers[name](data, job), job


@pytest.mark.parametrize("name", sorted(JOBS))
async def test_each_handler_sends_a_real_message(
    name: str, handlers: Any, queue: Queue, sink: MailSink
) -> None:
    result, job = await run(handlers, queue, name, JOBS[name])
    assert result["message_id"] == f"<emails.{job.id}@localhost>"
    assert result["accepted"] and result["rejected"] == []
    assert result["already_sent"] is False
    [got] = await received(sink)
    assert got["Message-ID"] == result["message_id"]
    text, html = got.get_body(("plain",)), got.get_body(("html",))
    assert text is not None and html is not None
    assert "<" not in text.get_content() and "<" in html.get_content()
    # A clean first send costs no log line and no progress step (a round trip each): the
    # return value says what was sent.
    logs = await queue.getJobLogs(job.id)
    assert logs["logs"] == []
    fresh = await Job.fromId(queue, job.id)
    assert fresh is not None and fresh.progress == 0


async def test_non_ascii_names_and_subjects_arrive_decoded(
    handlers: Any, queue: Queue, sink: MailSink
) -> None:
    await run(handlers, queue, "send-welcome", JOBS["send-welcome"])
    await run(handlers, queue, "send-newsletter", JOBS["send-newsletter"])
    welcome, newsletter = await received(sink)
    assert str(welcome["Subject"]) == "Welcome to mailqueue, Zoë!"
    assert welcome["To"].addresses[0].display_name == "Zoë Ångström"
    assert str(newsletter["Subject"]) == "Spring 🌷 news"
    assert newsletter["List-Unsubscribe"] == "<https://x.example/unsubscribe?u=1>"
    assert newsletter["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = newsletter.get_body(("html",))
    assert html is not None and "https://x.example/unsubscribe?u=1" in html.get_content()


async def test_cc_bcc_reply_to_headers_and_attachments(
    handlers: Any, queue: Queue, sink: MailSink
) -> None:
    data = {
        **JOBS["send-notification"],
        "cc": ["Cé <c@example.com>"], "bcc": "hidden@example.com",
        "reply_to": {"email": "help@example.com", "name": "Help"},
        "headers": {"X-Ticket": "42"},
        "attachments": [{"filename": "log.txt", "content": base64.b64encode(b"ok").decode(),
                         "encoding": "base64"}],
    }
    result, _ = await run(handlers, queue, "send-notification", data)
    assert result["accepted"] == ["ops@example.com", "c@example.com", "hidden@example.com"]
    [got] = await received(sink)
    assert "hidden@example.com" not in str(got)
    assert got["Cc"].addresses[0].display_name == "Cé"
    assert got["Reply-To"].addresses[0].addr_spec == "help@example.com"
    assert got["X-Ticket"] == "42"
    assert [a.get_filename() for a in got.iter_attachments()] == ["log.txt"]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("send-reset-password", {"to": "a@example.com"}, "'reset_url'"),
        ("send-welcome", {"name": "x"}, "'to' is required"),
        ("send-welcome", {"to": "not-an-address", "name": "x"}, "not a valid e-mail"),
        ("send-email", {"to": "a@example.com", "template": "nope"}, "no e-mail template"),
        ("send-email", {"to": "a@example.com", "subject": "s"}, "'html' and/or 'text'"),
        ("send-newsletter", {"to": "a@example.com", "campaign": "c", "articles": "x"}, "list"),
        ("send-email", {"to": "a@example.com", "subject": "s", "text": "t",
                        "attachments": [{"filename": "a", "content": "A" * 2_000_000}]},
         "the limit is"),
        ("send-notification", ["not", "an", "object"], "must be an object"),
    ],
)
async def test_bad_input_is_unrecoverable_and_sends_nothing(
    name: str, data: Any, reason: str, handlers: Any, queue: Queue, sink: MailSink
) -> None:
    with pytest.raises(UnrecoverableError, match=reason):
        await run(handlers, queue, name, data)
    assert await sink.outbox.count() == 0


async def test_a_job_that_runs_again_does_not_send_again(
    handlers: Any, queue: Queue, sink: MailSink
) -> None:
    first, job = await run(handlers, queue, "send-welcome", JOBS["send-welcome"])
    again = await handlers["send-welcome"](JOBS["send-welcome"], job)
    assert again["already_sent"] is True
    assert again["message_id"] == first["message_id"]
    assert again["accepted"] == first["accepted"]
    assert await sink.outbox.count() == 1


async def test_concurrent_runs_of_one_job_send_once(
    handlers: Any, queue: Queue, sink: MailSink
) -> None:
    job = await queue.add("send-welcome", JOBS["send-welcome"], {})
    outcomes = await asyncio.gather(
        *(handlers["send-welcome"](JOBS["send-welcome"], job) for _ in range(3)),
        return_exceptions=True,
    )
    sent = [o for o in outcomes if isinstance(o, dict) and not o["already_sent"]]
    assert len(sent) == 1
    assert await sink.outbox.count() == 1


async def test_550_is_unrecoverable_and_the_claim_is_released(
    handlers: Any, queue: Queue, sink: MailSink
) -> None:
    sink.fail_recipient("gone@example.com", 550)
    data = {**JOBS["send-welcome"], "to": "gone@example.com"}
    with pytest.raises(UnrecoverableError, match="550"):
        await run(handlers, queue, "send-welcome", data)
    sink.fail_recipient("later@example.com", 451, times=1)
    job = await queue.add("send-welcome", {**data, "to": "later@example.com"}, {})
    with pytest.raises(Exception, match="451") as info:
        await handlers["send-welcome"](job.data, job)
    assert not isinstance(info.value, UnrecoverableError)
    result = await handlers["send-welcome"](job.data, job)  # the retry
    assert result["accepted"] == ["later@example.com"] and not result["already_sent"]


async def test_without_smtp_url_the_registered_sink_is_used(
    settings: Settings, queue: Queue, sink: MailSink
) -> None:
    assert settings.smtp_url is None
    handlers = create_email_handlers(settings)
    try:
        result, _ = await run(handlers, queue, "send-email", JOBS["send-email"])
    finally:
        await handlers.close()
    assert result["accepted"] == ["bob@example.com"]


def test_html_to_text() -> None:
    text = html_to_text("<style>p{}</style><p>Hello &amp; <b>welcome</b></p><p>Bye<br>now</p>")
    assert text == "Hello & welcome\nBye\nnow\n"


async def test_through_a_worker_sink_down_then_up_and_550(
    mail: MailManager, sink: MailSink
) -> None:
    async with email_worker(mail, sink.url):
        await sink.stop()
        sink.fail_recipient("gone@example.com", 550)
        ok = [await mail.add_job("emails", "send-notification",
                                 {**JOBS["send-notification"], "to": f"u{i}@example.com"},
                                 attempts=10, backoff={"type": "fixed", "delay": 200})
              for i in range(5)]
        await failed_once(mail, "emails", [str(job.id) for job in ok])  # the server is down
        await sink.start()
        bad = await mail.add_job("emails", "send-welcome",
                                 {**JOBS["send-welcome"], "to": "gone@example.com"}, attempts=5)
        await settled(mail, "emails", [str(job.id) for job in [*ok, bad]], 20)
        for job in ok:
            info = await mail.queues.get_job("emails", job.id)
            assert info["state"] == "completed" and info["attempts_made"] >= 1
            assert info["return_value"]["accepted"] == [job.data["to"]]
        failed = await mail.queues.get_job("emails", bad.id)
        assert failed["state"] == "failed" and "550" in (failed["failed_reason"] or "")
        assert failed["attempts_made"] == 1  # unrecoverable: not retried
        messages = await sink.outbox.list_messages(100)
        delivered = sorted(m["envelope_to"][0] for m in messages)
        assert delivered == sorted(j.data["to"] for j in ok)  # each exactly once
