"""The built-in e-mail job handlers: validate, render, build, send once, record.

`create_email_handlers(settings)` returns the handlers for `send-welcome`,
`send-newsletter`, `send-reset-password`, `send-notification` and the generic
`send-email`. Each is `async def handler(data, job)` and returns
`{message_id, accepted, rejected, rejected_replies, response, already_sent}`.

A permanent problem (bad data, unknown template, missing variable, 5xx reply) is raised as
bullmq's `UnrecoverableError`, so the job fails at once with the reason; a transient one
(4xx, refused connection, timeout) as a normal exception, so the queue's backoff retries it.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from bullmq.custom_errors import UnrecoverableError

from mailqueue.mail.delivery import DeliveryLog, DeliveryRecord
from mailqueue.mail.errors import (
    InvalidMailDataError,
    PermanentMailError,
    TransientDeliveryError,
)
from mailqueue.mail.message import (
    MAX_ATTACHMENT_BYTES,
    OutgoingMessage,
    build_message,
    decode_attachments,
    make_message_id,
    parse_address_list,
    parse_sender,
)
from mailqueue.mail.sink import registered_sink_url
from mailqueue.mail.templates import RenderedMail, TemplateRenderer
from mailqueue.mail.transport import SmtpTransport
from mailqueue.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Awaitable[Any]]

# Job data keys about the envelope; every other key is a template variable.
ENVELOPE_FIELDS = frozenset(
    {"to", "cc", "bcc", "reply_to", "from", "headers", "attachments", "variables", "template",
     "subject", "html", "text"}
)

# What each built-in template needs; checked before rendering for a clearer error.
REQUIRED_VARIABLES: dict[str, tuple[str, ...]] = {
    "welcome": ("name",),
    "newsletter": ("campaign", "articles"),
    "reset-password": ("reset_url",),
    "notification": ("title", "message"),
}


class MailService:
    """What the handlers share: the renderer, the transport (pool) and the delivery log."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: SmtpTransport | None = None,
        template_dir: str | Path | None = None,
        redis: aioredis.Redis | None = None,
        max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
    ) -> None:
        self.settings = settings
        directory = template_dir or getattr(settings, "mail_template_dir", None)
        self.renderer = TemplateRenderer(directory)
        self.sender = parse_sender(settings.mail_from)
        self.redis = redis
        self.max_attachment_bytes = max_attachment_bytes
        self._transport = transport
        self._owns_transport = transport is None

    async def transport(self, redis: aioredis.Redis, prefix: str) -> SmtpTransport:
        """SMTP_URL when set, else the development sink registered under this prefix."""
        if self._transport is None:
            url = self.settings.smtp_url or await registered_sink_url(redis, prefix)
            if url is None:
                raise TransientDeliveryError(
                    "no SMTP server: set SMTP_URL, or run the development sink "
                    "(`mailqueue run` starts one)"
                )
            if self._transport is None:  # another job may have made one meanwhile
                self._transport = SmtpTransport(url)
        return self._transport

    async def close(self) -> None:
        if self._transport is not None and self._owns_transport:
            await self._transport.close()
            self._transport = None

    def build(self, data: dict[str, Any], job: Any, mail: RenderedMail,
              unsubscribe_url: str | None = None) -> OutgoingMessage:
        to = parse_address_list(data.get("to"), "to")
        if not to:
            raise InvalidMailDataError("'to' is required: an address, or a list of them")
        sender = self.sender
        if data.get("from") is not None:
            senders = parse_address_list(data["from"], "from")
            if len(senders) != 1:
                raise InvalidMailDataError("'from' must be one address")
            sender = senders[0]
        headers = data.get("headers")
        if headers is not None and not isinstance(headers, dict):
            raise InvalidMailDataError("'headers' must be an object of name -> value")
        domain = self.sender.email.rpartition("@")[2]
        return build_message(
            sender=sender,
            to=to,
            cc=parse_address_list(data.get("cc"), "cc"),
            bcc=parse_address_list(data.get("bcc"), "bcc"),
            reply_to=parse_address_list(data.get("reply_to"), "reply_to"),
            subject=mail.subject,
            text=mail.text or None,
            html=mail.html or None,
            headers=headers,
            attachments=decode_attachments(data.get("attachments"), self.max_attachment_bytes),
            message_id=make_message_id(job.queue.name, str(job.id), domain),
            unsubscribe_url=unsubscribe_url,
        )

    async def deliver(self, job: Any, message: OutgoingMessage) -> dict[str, Any]:
        """Send unless already delivered; record the delivery before returning."""
        redis: aioredis.Redis = self.redis or job.queue.client
        prefix: str = job.queue.prefix
        deliveries = DeliveryLog(redis, prefix)
        token, recorded = await deliveries.claim(message.message_id)
        if recorded is not None:
            await job.log(
                f"already delivered {message.message_id} (accepted: "
                f"{', '.join(recorded['accepted'])}); not sending it again"
            )
            return _result(recorded, already_sent=True)
        assert token is not None
        try:
            transport = await self.transport(redis, prefix)
            result = await transport.send(message)
        except BaseException:
            await deliveries.release(message.message_id, token)
            raise
        record = DeliveryRecord(
            message_id=message.message_id,
            accepted=result.accepted,
            rejected=list(result.rejected),
            response=result.response,
            delivered_at=int(time.time() * 1000),
        )
        await deliveries.record(message.message_id, token, record)
        for address, reply in result.rejected.items():
            await job.log(f"refused by the server: {address}: {reply}")
        await job.log(f"sent {message.message_id}: {result.response}")
        return {**_result(record, already_sent=False), "rejected_replies": result.rejected}


def _result(record: DeliveryRecord, already_sent: bool) -> dict[str, Any]:
    return {
        "message_id": record["message_id"],
        "accepted": record["accepted"],
        "rejected": record["rejected"],
        "rejected_replies": {},
        "response": record["response"],
        "already_sent": already_sent,
    }


def _variables(data: dict[str, Any]) -> dict[str, Any]:
    extra = data.get("variables") or {}
    if not isinstance(extra, dict):
        raise InvalidMailDataError("'variables' must be an object of name -> value")
    variables = {k: v for k, v in data.items() if k not in ENVELOPE_FIELDS}
    variables.update(extra)
    return variables


def _check_variables(template: str, variables: dict[str, Any]) -> None:
    missing = [name for name in REQUIRED_VARIABLES.get(template, ()) if name not in variables]
    if missing:
        raise InvalidMailDataError(
            f"template {template!r} needs {', '.join(repr(m) for m in missing)} in the job "
            "data (see docs/mail.md)"
        )
    if template == "newsletter" and not isinstance(variables["articles"], list):
        raise InvalidMailDataError("newsletter: 'articles' must be a list of {title, summary}")


_BLOCKS = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.S | re.I)
_BREAKS = re.compile(r"<br\s*/?>|</(p|div|h[1-6]|li|tr|table)\s*>", re.I)
_TAGS = re.compile(r"<[^>]+>")
_BLANKS = re.compile(r"\n\s*\n\s*\n+")


def html_to_text(markup: str) -> str:
    """A plain-text part for a message that came with HTML only."""
    text = _BREAKS.sub("\n", _BLOCKS.sub("", markup))
    text = html_lib.unescape(_TAGS.sub("", text))
    lines = (line.strip() for line in text.splitlines())
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip() + "\n"


def _job_label(job: Any) -> str:
    return f"{job.queue.name}:{job.id}"


def _make_handler(
    service: MailService, template: str | None
) -> Handler:
    async def handler(data: Any, job: Any) -> dict[str, Any]:
        try:
            if not isinstance(data, dict):
                raise InvalidMailDataError("job data must be an object with at least 'to'")
            unsubscribe_url = data.get("unsubscribe_url")
            if unsubscribe_url is not None and not isinstance(unsubscribe_url, str):
                raise InvalidMailDataError("'unsubscribe_url' must be a string")
            name = template or data.get("template")
            if name is not None:
                if not isinstance(name, str):
                    raise InvalidMailDataError("'template' must be a template name")
                variables = _variables(data)
                _check_variables(name, variables)
                mail = service.renderer.render(name, variables)
            else:
                mail = _direct_mail(data)
            message = service.build(data, job, mail, unsubscribe_url)
            # Few Redis round trips per message: one log line and one progress step here.
            await job.log(
                f"{'template ' + repr(name) if name else 'direct message'}: {mail.subject!r} "
                f"as {message.message_id} to {len(message.recipients)} recipient(s), "
                f"{len(message.data):,} bytes"
            )
            await job.updateProgress(50)
            result = await service.deliver(job, message)
            await job.updateProgress(100)
            return result
        except PermanentMailError as exc:
            await job.log(f"permanent failure, not retried: {exc}")
            raise UnrecoverableError(str(exc)) from exc
        except Exception as exc:
            await job.log(f"transient failure, will be retried: {exc}")
            log.info("job %s: transient mail failure: %s", _job_label(job), exc)
            raise

    handler.__name__ = f"send_{(template or 'email').replace('-', '_')}"
    return handler


def _direct_mail(data: dict[str, Any]) -> RenderedMail:
    subject, html, text = data.get("subject"), data.get("html"), data.get("text")
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidMailDataError(
            "send-email needs 'subject' with 'html' and/or 'text', or a 'template' name"
        )
    if html is not None and not isinstance(html, str):
        raise InvalidMailDataError("'html' must be a string")
    if text is not None and not isinstance(text, str):
        raise InvalidMailDataError("'text' must be a string")
    if not html and not text:
        raise InvalidMailDataError("send-email needs 'html' and/or 'text'")
    if html and not text:
        text = html_to_text(html)
    return RenderedMail(subject=" ".join(subject.split()), html=html or "", text=text or "")


class EmailHandlers(dict[str, Handler]):
    """The handler map, plus `close()` for the SMTP pool the handlers share."""

    def __init__(self, service: MailService, handlers: dict[str, Handler]) -> None:
        super().__init__(handlers)
        self.service = service

    async def close(self) -> None:
        await self.service.close()


def create_email_handlers(
    settings: Settings | None = None,
    *,
    transport: SmtpTransport | None = None,
    template_dir: str | Path | None = None,
    redis: aioredis.Redis | None = None,
) -> EmailHandlers:
    """Handlers for the built-in e-mail jobs, sharing one SMTP pool.

    `transport` defaults to `SMTP_URL` (or the development sink registered in Redis);
    `template_dir` to `MAIL_TEMPLATE_DIR`; `redis` (for the delivery records) to the
    connection of the queue or worker that ran the job.
    """
    service = MailService(
        settings or Settings(), transport=transport, template_dir=template_dir, redis=redis
    )
    return EmailHandlers(
        service,
        {
            "send-welcome": _make_handler(service, "welcome"),
            "send-newsletter": _make_handler(service, "newsletter"),
            "send-reset-password": _make_handler(service, "reset-password"),
            "send-notification": _make_handler(service, "notification"),
            "send-email": _make_handler(service, None),
        },
    )
