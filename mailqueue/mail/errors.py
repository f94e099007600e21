"""The two failure classes of sending mail: permanent (never retried) and transient (retried).

A handler turns a `PermanentMailError` into bullmq's `UnrecoverableError`, so the job fails
at once with the reason; any other exception, `TransientMailError` included, is retried with
the queue's backoff.
"""

from __future__ import annotations

from mailqueue.errors import MailQueueError


class MailError(MailQueueError):
    """Base class of every error of the mail package."""


class PermanentMailError(MailError):
    """Sending this message again cannot succeed: fix the job data, the template or the address."""


class TransientMailError(MailError):
    """The message may go through later: the server is down, busy, or asked us to retry."""


class TemplateNotFoundError(PermanentMailError):
    """No e-mail template of that name in the template directories."""


class TemplateRenderError(PermanentMailError):
    """A template could not be rendered, most often because a variable is missing."""


class InvalidMailDataError(PermanentMailError, ValueError):
    """Job data of the wrong shape: a missing field, a bad header, a bad attachment."""


class InvalidAddressError(InvalidMailDataError):
    """An e-mail address that is not syntactically valid."""


class AttachmentTooLargeError(InvalidMailDataError):
    """Attachments past the size limit: link to the file instead of attaching it."""


class PermanentDeliveryError(PermanentMailError):
    """The SMTP server refused the message with a 5xx reply."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientDeliveryError(TransientMailError):
    """A 4xx reply, a refused or dropped connection, or a timeout."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeliveryInProgressError(TransientMailError):
    """Another run of the same job is sending this message right now (a stalled job re-run)."""
