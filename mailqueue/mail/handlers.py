"""The built-in e-mail job handlers: validate, render, build, send once, record.

`create_email_handlers(settings)` returns the handlers for `send-welcome`,
`send-newsletter`, `send-reset-password`, `send-notification` and the generic
`send-email`. Each is `async def handler(data, job)` and returns
`{message_id, accepted, rejected, rejected_replies, recipient_replies, response,
already_sent}`; a job where the server refused some recipients fails, naming them.

A permanent problem (bad data, unknown template, missing variable, 5xx reply) is raised as
bullmq's `UnrecoverableError`, so the job fails at once with the reason; a transient one
(4xx, refused connection, timeout) as a normal exception, so the queue's backoff retries it.

Job data is read through `jobdata.normalize_mail_data`: snake_case and camelCase keys alike.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from bullmq.custom_errors import UnrecoverableError

from mailqueue.mail.dkim import message_signer
from mailqueue.mail.errors import (
    InvalidMailDataError,
    PermanentMailError,
    PutBackError,
    TemplateNotFoundError,
    TransientDeliveryError,
)
from mailqueue.mail.jobdata import MailJobData, normalize_mail_data
from mailqueue.mail.message import (
    MAX_ATTACHMENT_BYTES,
    OutgoingMessage,
    build_message,
    check_unsubscribe_url,
    decode_attachments,
    make_message_id,
    parse_address_list,
    parse_sender,
)
from mailqueue.mail.message_log import Retention
from mailqueue.mail.sending import (
    AT_LEAST_ONCE,
    DeliveryMode,
    check_delivery_mode,
    put_back,
    send_once,
)
from mailqueue.mail.sink import registered_sink_url
from mailqueue.mail.templates import RenderedMail, TemplateRenderer
from mailqueue.mail.transport import SmtpTransport
from mailqueue.mail.unsubscribe import url_for_job
from mailqueue.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Awaitable[Any]]


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
        # DKIM signing when configured: checked here, so a bad key fails the start, not jobs.
        self.sign = message_signer(settings)
        self.redis = redis
        self.max_attachment_bytes = max_attachment_bytes
        self._transport = transport
        self._owns_transport = transport is None
        self.log_retention = Retention(settings.mail_log_max_entries,
                                       settings.mail_log_max_age_days)
        # Suppression reasons this service sends to regardless (a fallback relay: bounces).
        self.ignored_suppressions: frozenset[str] = frozenset()
        # Called with (campaign id, send errors in a row) after a campaign job's send error:
        # set by the process that serves campaigns (mailqueue.campaign_workers).
        self.on_campaign_errors: Callable[[str, int], Awaitable[None]] | None = None

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

    def render(self, data: Any, template: str | None = None) -> tuple[str | None, RenderedMail]:
        """The template's name (None: a direct message) and the mail, every check done."""
        fields = normalize_mail_data(data)
        name = template or fields.options.get("template")
        if name is None:
            return None, _direct_mail(fields)
        if not isinstance(name, str):
            raise InvalidMailDataError(f"{fields.quoted('template')} must be a template name")
        if not self.renderer.exists(name):
            known = ", ".join(self.renderer.list_templates())
            raise TemplateNotFoundError(f"no e-mail template {name!r}; templates: {known}")
        mail = self.renderer.render(name, fields.template_variables(name))
        subject = fields.options.get("subject")
        if subject is not None:  # the producer's subject wins over the template's
            mail = RenderedMail(_subject(subject, fields), mail.html, mail.text)
        return name, mail

    def prepare(self, data: Any, template: str | None, job: Any
                ) -> tuple[str | None, RenderedMail, OutgoingMessage]:
        """Everything but sending: what a worker would refuse raises a PermanentMailError.

        `job` needs only `queue.name` and `id` (for the Message-ID); `mailqueue send` checks
        a job with this before enqueueing it.
        """
        fields = self._with_unsubscribe_link(normalize_mail_data(data), job)
        name, mail = self.render(fields, template)
        return name, mail, self.build(fields, job, mail, signed_link=False)

    def _with_unsubscribe_link(self, fields: MailJobData, job: Any) -> MailJobData:
        """A newsletter's signed one-click URL (mailqueue.mail.unsubscribe), made before the
        rendering so that the footer link is the List-Unsubscribe one; the job's own wins."""
        if fields.options.get("unsubscribe_url") is not None:
            return fields
        try:
            to = parse_address_list(fields.options.get("to"), fields.name_of("to"))
        except InvalidMailDataError:
            return fields  # build() says what is wrong with it
        url = url_for_job(self.settings, job, fields, to)
        if url is not None:
            fields.options["unsubscribe_url"] = url
            fields.variables.setdefault("unsubscribe_url", url)
        return fields

    def build(self, data: Any, job: Any, mail: RenderedMail,
              unsubscribe_url: str | None = None, signed_link: bool = True
              ) -> OutgoingMessage:
        """The message for `data`'s options (either spelling); `unsubscribe_url` overrides.
        `signed_link`: give a newsletter without a link its signed one (prepare() has done
        that before rendering)."""
        fields = normalize_mail_data(data)
        options, name, quoted = fields.options, fields.name_of, fields.quoted
        to = parse_address_list(options.get("to"), name("to"))
        if not to:
            raise InvalidMailDataError(f"{quoted('to')} is required: an address, or a list of them")
        sender = self.sender
        if options.get("from") is not None:
            senders = parse_address_list(options["from"], name("from"))
            if len(senders) != 1:
                raise InvalidMailDataError(f"{quoted('from')} must be one address")
            sender = senders[0]
        headers = options.get("headers")
        if headers is not None and not isinstance(headers, dict):
            raise InvalidMailDataError(f"{quoted('headers')} must be an object of name -> value")
        headers = {**(headers or {}), **_threading_headers(fields)}
        url = unsubscribe_url if unsubscribe_url is not None else options.get("unsubscribe_url")
        if url is None and signed_link:  # a newsletter: a signed one-click link
            url = url_for_job(self.settings, job, fields, to)
        if url is not None:
            url = check_unsubscribe_url(url, name("unsubscribe_url"))
        domain = self.sender.email.rpartition("@")[2]
        return self.sign(build_message(
            sender=sender,
            to=to,
            cc=parse_address_list(options.get("cc"), name("cc")),
            bcc=parse_address_list(options.get("bcc"), name("bcc")),
            reply_to=parse_address_list(options.get("reply_to"), name("reply_to")),
            subject=mail.subject,
            text=mail.text or None,
            html=mail.html or None,
            headers=headers,
            attachments=decode_attachments(options.get("attachments"), self.max_attachment_bytes),
            message_id=make_message_id(job.queue.name, str(job.id), domain),
            unsubscribe_url=url,
        ))

    async def deliver(self, job: Any, message: OutgoingMessage,
                      mode: DeliveryMode = AT_LEAST_ONCE, template: str | None = None,
                      campaign: str | None = None) -> dict[str, Any]:
        """Send unless already delivered, once, and not to suppressed addresses unless the
        template says so (mailqueue.mail.sending.send_once)."""
        ignore = bool(template and self.renderer.settings(template).get("ignore_suppressions"))
        return await send_once(self, job, message, mode, template, ignore_suppressions=ignore,
                               campaign=campaign)

    def campaign_of(self, data: Any) -> str | None:
        """The job's campaign id (mailqueue.campaigns), if it is a campaign's."""
        value = normalize_mail_data(data).options.get("campaign_id")
        if value is None:
            return None
        if not isinstance(value, str) or not value.isalnum() or len(value) > 40:
            raise InvalidMailDataError("'campaign_id' must be a campaign id")
        return value

    def delivery_mode(self, data: Any, template: str | None) -> DeliveryMode:
        """The job's `delivery`, else its template's settings.json, else at-least-once."""
        fields = normalize_mail_data(data)
        value = fields.options.get("delivery")
        if value is not None:
            return check_delivery_mode(value, fields.quoted("delivery"))
        setting = self.renderer.settings(template).get("delivery") if template else None
        if setting is None:
            return AT_LEAST_ONCE
        return check_delivery_mode(setting, f"'delivery' in {template}/settings.json")


def _subject(value: Any, fields: MailJobData) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidMailDataError(f"{fields.quoted('subject')} must be a non-empty string")
    return " ".join(value.split())


def _threading_headers(fields: MailJobData) -> dict[str, str]:
    """nodemailer's `inReplyTo` and `references` (a string or a list of Message-IDs)."""
    headers: dict[str, str] = {}
    for option, header in (("in_reply_to", "In-Reply-To"), ("references", "References")):
        value = fields.options.get(option)
        if value is None:
            continue
        ids = value if isinstance(value, list) else [value]
        if not ids or not all(isinstance(i, str) and i.strip() for i in ids):
            raise InvalidMailDataError(
                f"{fields.quoted(option)} must be a Message-ID or a list of them"
            )
        headers[header] = " ".join(i.strip() for i in ids)
    return headers


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
            fields = normalize_mail_data(data)  # once: every step below reads these
            name, mail, message = service.prepare(fields, template, job)
            mode = service.delivery_mode(fields, name)
            if getattr(job, "attemptsMade", 0):
                # A retry: what this run sends (the first run's is in its return value).
                # No progress steps and no log line on a first run: each is a Redis round
                # trip, and a one-message job has nothing to report between start and end.
                await job.log(
                    f"attempt {job.attemptsMade + 1}: "
                    f"{'template ' + repr(name) if name else 'direct message'}: "
                    f"{mail.subject!r} as {message.message_id} to "
                    f"{len(message.recipients)} recipient(s), {len(message.data):,} bytes"
                )
            return await service.deliver(job, message, mode, name, service.campaign_of(fields))
        except PutBackError as exc:
            await put_back(job, exc)
        except PermanentMailError as exc:
            await job.log(f"permanent failure, not retried: {exc}")
            raise UnrecoverableError(str(exc)) from exc
        except Exception as exc:
            await job.log(f"transient failure, will be retried: {exc}")
            log.info("job %s: transient mail failure: %s", _job_label(job), exc)
            raise

    handler.__name__ = f"send_{(template or 'email').replace('-', '_')}"
    return handler


def _direct_mail(fields: MailJobData) -> RenderedMail:
    options = fields.options
    subject, html, text = options.get("subject"), options.get("html"), options.get("text")
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidMailDataError(
            f"send-email needs {fields.quoted('subject')} with 'html' and/or 'text', or a "
            f"'template' name"
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
