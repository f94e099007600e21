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


class DeliveryOutcomeUnknownError(TransientDeliveryError):
    """The connection broke (or timed out) after the message was sent and before the server's
    reply to it was read: the server may have accepted it. At-least-once retries (a possible
    second copy); at-most-once leaves the decision to an operator (UnconfirmedSendError)."""


class DeliveryInProgressError(TransientMailError):
    """Another run of the same job holds the send claim and is alive (it holds the job's lock,
    or, outside a worker, its claim has not expired): the job is put back, not failed, and
    runs again in `retry_in_ms`."""

    def __init__(self, message: str, retry_in_ms: int = 1000) -> None:
        super().__init__(message)
        self.retry_in_ms = retry_in_ms


class UnconfirmedSendError(PermanentMailError):
    """At-most-once delivery: an earlier attempt may have sent this message (it stopped
    between sending and recording the server's answer). Not resent automatically: the job
    fails with this reason, and an operator's retry (dashboard or CLI) sends it."""
