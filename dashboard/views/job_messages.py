"""A job's messages in the delivery log: what the job page's Messages section shows, drawn
with the page (a section that loaded itself would fetch a URL built from the job id) and
again, over htmx, when the job changes (views/messages.py job_messages)."""

from __future__ import annotations

from typing import TypedDict

from mailqueue.mail.message import make_message_id, parse_sender
from mailqueue.mail.message_log import MessageEntry
from mailqueue.manager import MailManager

JOB_MESSAGES_SHOWN = 50


def job_message_id(mail: MailManager, queue: str, job_id: str) -> str:
    """The Message-ID every attempt of the job's message carries (as MailDesk makes it)."""
    domain = parse_sender(mail.settings.mail_from).email.rpartition("@")[2]
    return make_message_id(queue, job_id, domain)


class JobMessages(TypedDict):
    """The context of partials/_job_messages_list.html."""

    entries: list[MessageEntry]
    queue: str
    job_id: str
    message_id: str


async def job_messages_context(mail: MailManager, queue: str, job_id: str) -> JobMessages:
    return {"entries": await mail.desk.job_messages(queue, job_id, JOB_MESSAGES_SHOWN),
            "queue": queue, "job_id": job_id,
            "message_id": job_message_id(mail, queue, job_id)}
