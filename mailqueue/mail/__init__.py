"""E-mail: templates, MIME messages, the SMTP transport and pool, the development sink,
the no-double-send record and the built-in job handlers. See docs/mail.md."""

from __future__ import annotations

from mailqueue.mail.errors import (
    MailError,
    PermanentMailError,
    TransientMailError,
)
from mailqueue.mail.handlers import EmailHandlers, create_email_handlers
from mailqueue.mail.outbox import Outbox
from mailqueue.mail.sink import MailSink
from mailqueue.mail.templates import RenderedMail, TemplateRenderer
from mailqueue.mail.transport import SmtpTransport
from mailqueue.smtp_url import SmtpConfig

__all__ = [
    "EmailHandlers",
    "MailError",
    "MailSink",
    "Outbox",
    "PermanentMailError",
    "RenderedMail",
    "SmtpConfig",
    "SmtpTransport",
    "TemplateRenderer",
    "TransientMailError",
    "create_email_handlers",
]
