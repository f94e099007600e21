"""The Node version's README examples, enqueued by Node BullMQ exactly as its users write
them, run by the built-in Python handlers and delivered to the real SMTP sink (issue 10).

Node producers write camelCase and nodemailer's option names: `replyTo`, `cc`, `bcc`,
`unsubscribeUrl`, `attachments` ({filename, content, contentType, encoding}). Each must act
on the delivered message, and a job lacking what its message needs fails at once, telling
the producer the field in its own spelling.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage
from typing import Any

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.waiting import eventually

from .conftest import received

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()

# The seed README's examples, verbatim (as JSON).
SEED_WELCOME = {"to": "user@example.com", "subject": "Bienvenue !"}
SEED_NEWSLETTER = {"to": "subscribers@example.com"}
SEED_WORKFLOW = {
    "name": "email-workflow", "queueName": "email-processing", "data": {"type": "workflow"},
    "children": [
        {"name": "validate-email", "queueName": "email-processing",
         "data": {"to": "test@example.com"}},
        {"name": "prepare-template", "queueName": "email-processing",
         "data": {"template": "welcome"},
         "children": [{"name": "send-welcome", "queueName": "email-processing",
                       "data": {"to": "test@example.com"}}]},
    ],
}
# A Node producer using nodemailer's option names and camelCase variables.
CAMEL_WELCOME = {
    "to": "zoe@example.com", "firstName": "Zoë", "replyTo": "Support <support@example.com>",
    "cc": ["Cé <cc@example.com>"], "bcc": "audit@example.com",
    "unsubscribeUrl": "https://app.example/unsubscribe?u=zoe", "actionUrl": "https://app.example",
    "attachments": [
        {"filename": "hello.txt", "content": "Hello from Node", "contentType": "text/plain"},
        {"filename": "logo.png", "content": PNG, "encoding": "base64"},
    ],
}
# `resetLink`: the producer's slip; the message needs `resetUrl`.
RESET_WITHOUT_URL = {"to": "ada@example.com", "firstName": "Ada",
                     "resetLink": "https://app.example/reset?t=1"}


def by_recipient(messages: list[EmailMessage]) -> dict[str, EmailMessage]:
    return {m["To"].addresses[0].addr_spec: m for m in messages}


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None, f"no {kind} part"
    content: str = part.get_content()
    return content


async def test_the_seed_examples_written_in_node_are_delivered(
    mail: MailManager, node: Any, sink: MailSink
) -> None:
    # What `mailqueue run` does: the built-in handlers (e-mail and flow steps) on each queue,
    # sending to the development sink registered in Redis.
    mail.start_worker("emails")
    mail.start_worker("email-processing")

    added = await node.run("add", queue="emails", jobs=[
        {"name": "send-welcome", "data": SEED_WELCOME},
        {"name": "send-welcome", "data": CAMEL_WELCOME},
        {"name": "send-reset-password", "data": RESET_WITHOUT_URL,
         "opts": {"attempts": 3, "backoff": {"type": "fixed", "delay": 100}}},
    ])
    reset_id = added[2]["id"]
    await node.run("schedule", queue="emails", id="daily-newsletter",
                   repeat={"pattern": "0 9 * * *"},
                   template={"name": "send-newsletter", "data": SEED_NEWSLETTER})
    [flow] = [e for e in await node.run("flow", flow=SEED_WORKFLOW) if e["event"] == "flow"]
    root_id = flow["tree"]["id"]

    # The scheduled run waits for 9:00; run it now, as 9:00 would.
    await eventually(lambda: mail.queues.get_job_counts("emails"),
                     accept=lambda c: c["delayed"] == 1)
    assert await mail.queues.promote_delayed("emails") == 1

    await eventually(lambda: mail.queues.get_job_counts("emails"),
                     accept=lambda c: c["completed"] == 3 and c["failed"] == 1, timeout=30)
    root = await eventually(lambda: mail.queues.get_job("email-processing", root_id),
                            accept=lambda j: j["state"] in ("completed", "failed"), timeout=30)

    # The workflow: every step ran and the parent completed, having seen the sent message.
    assert root["state"] == "completed", root["failed_reason"]
    assert root["return_value"]["steps"] == ["prepare", "validate"]
    processing = await mail.queues.get_job_counts("email-processing")
    assert processing["completed"] == 4 and processing["failed"] == 0

    messages = by_recipient(await received(sink))
    assert set(messages) == {"user@example.com", "zoe@example.com",
                             "subscribers@example.com", "test@example.com"}
    assert root["return_value"]["sent"] == [messages["test@example.com"]["Message-ID"]]

    # send-welcome with {to, subject} only: the subject given, a greeting without a name.
    seed = messages["user@example.com"]
    assert seed["Subject"] == "Bienvenue !"
    for text in (body(seed, "plain"), body(seed, "html"), messages["test@example.com"].as_string()):
        assert "None" not in text and "Welcome, !" not in text and "Welcome, ," not in text
    assert "Welcome!" in body(seed, "plain")
    assert messages["test@example.com"]["Subject"] == "Welcome to mailqueue!"

    # The scheduled send-newsletter with {to} only.
    newsletter = messages["subscribers@example.com"]
    assert newsletter["Subject"] == "mailqueue newsletter"
    assert "The latest news from mailqueue." in body(newsletter, "plain")

    # nodemailer's options acted on the message; camelCase variables reached the template.
    camel = messages["zoe@example.com"]
    assert camel["Subject"] == "Welcome to mailqueue, Zoë!"
    assert "Welcome, Zoë!" in body(camel, "plain")
    assert camel["Reply-To"].addresses[0].addr_spec == "support@example.com"
    assert camel["Cc"].addresses[0].addr_spec == "cc@example.com"
    assert camel["List-Unsubscribe"] == "<https://app.example/unsubscribe?u=zoe>"
    assert "Bcc" not in camel and "audit@example.com" not in camel.as_string()
    [summary] = [s for s in await sink.outbox.list_messages(10) if s["to"] == "zoe@example.com"]
    assert "audit@example.com" in summary["envelope_to"]
    files = {a.get_filename(): a for a in camel.iter_attachments()}
    assert set(files) == {"hello.txt", "logo.png"}
    assert files["hello.txt"].get_content() == "Hello from Node"
    assert files["logo.png"].get_content() == base64.b64decode(PNG)
    assert 'href="https://app.example"' in body(camel, "html")

    # The reset e-mail without its link: failed at once, not retried, `resetUrl` named.
    reset = await mail.queues.get_job("emails", reset_id)
    assert reset["state"] == "failed"
    assert reset["attempts_made"] == 1 and reset["opts"]["attempts"] == 3
    reason = reset["failed_reason"] or ""
    assert "needs 'resetUrl'" in reason and "resetLink" in reason, reason
    assert "ada@example.com" not in {m["To"].addresses[0].addr_spec for m in messages.values()}
