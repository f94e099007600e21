"""The two failure classes of sending mail: permanent (never retried) and transient (retried).

A handler turns a `PermanentMailError` into bullmq's `UnrecoverableError`, so the job fails
at once with the reason; any other exception, `TransientMailError` included, is retried with
the queue's backoff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailqueue.errors import MailQueueError

if TYPE_CHECKING:
    from mailqueue.worker_gates import WorkerGate


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
    """The SMTP server refused the message with a 5xx reply.

    `refused`: the recipients the refusal was about (a 5xx to their RCPT TO, or to DATA)
    -> the server's reply; they go on the suppression list. Empty when the refusal was not
    about recipients (the sender refused at MAIL FROM)."""

    def __init__(self, message: str, code: int | None = None,
                 refused: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.refused = refused or {}


class TransientDeliveryError(TransientMailError):
    """A 4xx reply, a refused or dropped connection, or a timeout."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeliveryOutcomeUnknownError(TransientDeliveryError):
    """The connection broke (or timed out) after the message was sent and before the server's
    reply to it was read: the server may have accepted it. At-least-once retries (a possible
    second copy); at-most-once leaves the decision to an operator (UnconfirmedSendError)."""


class PutBackError(TransientMailError):
    """Not the job's fault: the job is put back (moved to delayed for `retry_in_ms`) without
    spending an attempt, instead of failing."""

    def __init__(self, message: str, retry_in_ms: int = 1000) -> None:
        super().__init__(message)
        self.retry_in_ms = retry_in_ms


class DeliveryInProgressError(PutBackError):
    """Another run of the same job holds the send claim and is alive (it holds the job's lock,
    or, outside a worker, its claim has not expired): the job is put back, not failed, and
    runs again in `retry_in_ms`."""


class SmtpUnreachableError(TransientDeliveryError):
    """No SMTP session could be opened: connection refused, DNS failure, TLS handshake
    failure, timeout connecting. The transport's problem, not the message's: the transport's
    circuit breaker counts these (mailqueue.mail.breaker)."""


class TransportDownError(TransientDeliveryError, PutBackError):
    """The transport's circuit breaker is open: nothing was sent and no connection was tried.
    The job is put back without spending an attempt (another worker may be able to send it),
    and `gate` tells the worker to stop taking jobs until the breaker closes again.

    A TransientDeliveryError too, so code that only knows those (the send claim's release,
    handlers outside a worker) treats it as the retryable failure it is."""

    def __init__(self, message: str, gate: WorkerGate, retry_in_ms: int = 1000) -> None:
        TransientDeliveryError.__init__(self, message)
        self.retry_in_ms = retry_in_ms
        self.gate = gate


class UnconfirmedSendError(PermanentMailError):
    """At-most-once delivery: an earlier attempt may have sent this message (it stopped
    between sending and recording the server's answer). Not resent automatically: the job
    fails with this reason, and an operator's retry (dashboard or CLI) sends it."""
