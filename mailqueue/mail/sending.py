"""Sending one message once: the claim, the send, the record — and the delivery mode.

Two delivery modes, per template (`settings.json` in the template's folder:
`{"delivery": "at-most-once"}`) or per job (`delivery` in the job data, which wins):

- `at-least-once` (the default): a send whose outcome is unknown — the attempt died, or the
  connection broke after the message went out and before the server's answer — is sent
  again. Nothing is lost; the receiver may get a second copy (same Message-ID).
- `at-most-once`: such a send is not resent. The job fails with "unconfirmed send: ..."
  and an operator checks the recipient's mailbox / the outbox, then retries (the retry
  sends) or not. For mail where a duplicate is worse than a delay.

A live attempt holding the claim never costs an attempt: the job is put back (moved to
delayed with bullmq's skipAttempt, then DelayedError) until that attempt is done. Nor does
a transport that is down (its circuit breaker open): the job is put back for another worker,
and this one takes no job until the breaker closes (mailqueue.worker_gates).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Literal, NoReturn, Protocol

import redis.asyncio as aioredis
from bullmq.custom_errors import DelayedError

from mailqueue.mail.delivery import AllSuppressed, Claim, DeliveryLog, DeliveryRecord
from mailqueue.mail.errors import (
    DeliveryOutcomeUnknownError,
    InvalidMailDataError,
    PermanentDeliveryError,
    PutBackError,
    TransientDeliveryError,
    TransportDownError,
    UnconfirmedSendError,
)
from mailqueue.mail.message import OutgoingMessage
from mailqueue.mail.message_log import Attempt, LogEntry, Retention
from mailqueue.mail.suppressions import SuppressionList
from mailqueue.mail.transport import SmtpTransport
from mailqueue.worker_gates import hold_worker


class SendingService(Protocol):
    """What sending needs of the service that runs it (mailqueue.mail.handlers.MailService)."""

    redis: aioredis.Redis | None
    log_retention: Retention
    ignored_suppressions: frozenset[str]
    on_campaign_errors: Callable[[str, int], Awaitable[None]] | None

    async def transport(self, redis: aioredis.Redis, prefix: str) -> SmtpTransport: ...

DeliveryMode = Literal["at-least-once", "at-most-once"]
AT_LEAST_ONCE: DeliveryMode = "at-least-once"
AT_MOST_ONCE: DeliveryMode = "at-most-once"
DELIVERY_MODES: tuple[DeliveryMode, ...] = (AT_LEAST_ONCE, AT_MOST_ONCE)


def check_delivery_mode(value: Any, where: str) -> DeliveryMode:
    """`value` as a delivery mode; a permanent error naming `where` otherwise."""
    if value == AT_LEAST_ONCE:
        return AT_LEAST_ONCE
    if value == AT_MOST_ONCE:
        return AT_MOST_ONCE
    raise InvalidMailDataError(
        f"{where} must be {' or '.join(repr(m) for m in DELIVERY_MODES)}, not {value!r}"
    )


async def send_once(service: SendingService, job: Any, message: OutgoingMessage,
                    mode: DeliveryMode = AT_LEAST_ONCE, template: str | None = None,
                    ignore_suppressions: bool = False, campaign: str | None = None
                    ) -> dict[str, Any]:
    """Send unless already delivered; record the delivery before returning.

    Recipients on the suppression list are not sent to (unless `ignore_suppressions`: the
    template's setting for mail that must go, a password reset); when that is every
    recipient, nothing is sent and the job completes with the outcome "suppressed".
    Some recipients refused (5xx) while others accepted: the others have the message, so
    the delivery is recorded, then the job fails naming the refused ones. A retry sends
    to the recipients without the message only (the record says who has it). A refused
    recipient goes on the suppression list. Every attempt writes the delivery log.

    Round trips in the normal path: the claim (with the suppression lookup), and the record
    with its delivery-log entry — in the native worker each shares a write with the other
    slots' calls, and the record is in Redis before the job completes. Nothing is logged on
    the job then: its return value says what was sent; job logs are for failures, retries
    and skipped sends.
    """
    redis: aioredis.Redis = service.redis or job.queue.client
    prefix: str = job.queue.prefix
    # The worker's own connection: its script pipe orders the record before the completion.
    pipe = getattr(job.queue, "script_pipe", None) if service.redis is None else None
    deliveries = DeliveryLog(redis, prefix, pipe=pipe, retention=service.log_retention)
    attempt = Attempt(message.message_id, job.queue.name, str(job.id),
                      int(getattr(job, "attemptsMade", 0) or 0) + 1, template,
                      message.subject, len(message.data), campaign)
    transport = await service.transport(redis, prefix)
    transport.breaker.check()  # down: put back before claiming anything
    check = None if ignore_suppressions else list(message.recipients)
    claim = await deliveries.claim(message.message_id, job, at_most_once=mode == AT_MOST_ONCE,
                                   check=check)
    ignored = service.ignored_suppressions
    if isinstance(claim, AllSuppressed) and ignored and any(
            entry.get("reason") in ignored for entry in claim.suppressed.values()):
        # Rare (a fallback relay): claim again, looking up only what this service heeds.
        check = [a for a, e in claim.suppressed.items() if e.get("reason") not in ignored]
        claim = await deliveries.claim(message.message_id, job,
                                       at_most_once=mode == AT_MOST_ONCE, check=check)
    if isinstance(claim, AllSuppressed):
        await deliveries.log([(_suppressed_entry(claim.suppressed), attempt)])
        return _suppressed_result(message.message_id, claim.suppressed)
    if not isinstance(claim, Claim):
        await job.log(
            f"already delivered {message.message_id} (accepted: "
            f"{', '.join(claim['accepted'])}); not sending it again"
        )
        return _result(claim, already_sent=True)
    recorded, token = claim.record, claim.token
    suppressed = {a: e for a, e in claim.suppressed.items() if e.get("reason") not in ignored}
    before: list[str] = recorded["accepted"] if recorded is not None else []
    if claim.status == "taken":
        # Only after a crash or a lost lock: worth a log line (one more round trip).
        await job.log(f"the attempt that was sending {message.message_id} lost its lock; "
                      f"sending it again ({mode})")
    elif claim.status == "released":
        await job.log(f"{message.message_id} was an unconfirmed send; sending it again "
                      "on the operator's retry")
    if before:
        missing = [r for r in message.recipients if r not in before]
        if not missing:  # the ones refused before are no longer recipients
            await deliveries.release(message.message_id, token)
            await job.log(f"already delivered {message.message_id} to every recipient")
            assert recorded is not None
            return _result(recorded, already_sent=True)
        await job.log(
            f"{message.message_id} was delivered to {', '.join(before)} already; sending "
            f"it to {', '.join(missing)} only"
        )
        message = replace(message, recipients=missing)
    if suppressed:
        to_send = [r for r in message.recipients if r not in suppressed]
        if not to_send:
            await deliveries.release(message.message_id, token)
            await deliveries.log([(_suppressed_entry(suppressed), attempt)])
            if recorded is not None:  # the others got it on an earlier attempt
                return _result(recorded, already_sent=True, suppressed=suppressed)
            return _suppressed_result(message.message_id, suppressed)
        message = replace(message, recipients=to_send)
    try:
        result = await transport.send(message)
    except (PermanentDeliveryError, TransientDeliveryError) as exc:
        last = _last_attempt(job, exc, mode)
        entries = [(_failure_entry(exc, message.recipients, last), attempt)]
        if suppressed:
            entries.append((_suppressed_entry(suppressed), attempt))
        if isinstance(exc, DeliveryOutcomeUnknownError) and mode == AT_MOST_ONCE:
            # The server may have it: keep the claim, mark it, leave it to an operator.
            await deliveries.mark_unconfirmed(message.message_id, job)
            await deliveries.log(entries)
            raise UnconfirmedSendError(
                f"unconfirmed send: {message.message_id} may have been delivered ({exc}); "
                "check the recipient's mailbox / the outbox before retrying: a retry sends "
                "it again"
            ) from exc
        await deliveries.release(message.message_id, token)  # nothing (more) was sent
        errors_in_a_row = await deliveries.log(entries, wait=campaign is not None)
        if isinstance(exc, PermanentDeliveryError):
            await _suppress_refused(redis, prefix, exc.refused, exc.code)
        if campaign and errors_in_a_row and service.on_campaign_errors is not None:
            await service.on_campaign_errors(campaign, errors_in_a_row)
        raise
    except BaseException:
        # Cancelled or broken anywhere, DATA included: at most once, the claim stays (the
        # next run finds it held by a dead attempt and asks an operator).
        if mode != AT_MOST_ONCE:
            await deliveries.release(message.message_id, token)
        raise
    record = DeliveryRecord(
        message_id=message.message_id,
        accepted=before + result.accepted,
        rejected=list(result.rejected),
        response=result.response,
        delivered_at=int(time.time() * 1000),
        rejected_replies=result.rejected,
        recipient_replies={**(recorded["recipient_replies"] if recorded else {}),
                           **result.replies},
    )
    entries = [(LogEntry("sent", result.accepted, _code(result.response), result.response,
                         {r: result.replies[r] for r in result.accepted if r in result.replies}),
                attempt)]
    if result.rejected:
        first_reply = next(iter(result.rejected.values()))
        entries.append((LogEntry("failed", list(result.rejected), _code(first_reply),
                                 first_reply, dict(result.rejected)), attempt))
    if suppressed:
        entries.append((_suppressed_entry(suppressed), attempt))
    await deliveries.record(message.message_id, token, record, entries)
    if result.rejected:
        for address, reply in result.rejected.items():
            await job.log(f"refused by the server: {address}: {reply}")
        await _suppress_refused(redis, prefix, result.rejected)
        refused = "; ".join(f"{a}: {reply}" for a, reply in result.rejected.items())
        code = int(next(iter(result.rejected.values()))[:3])
        raise PermanentDeliveryError(
            f"the server refused {len(result.rejected)} recipient(s) ({refused}); "
            f"delivered to {', '.join(record['accepted'])}. A retry sends to the "
            "refused recipient(s) only", code,
        )
    return _result(record, already_sent=False, suppressed=suppressed)


def _code(reply: str) -> int | None:
    head = reply[:3]
    return int(head) if head.isdigit() else None


def _last_attempt(job: Any, exc: Exception, mode: DeliveryMode) -> bool:
    """Whether this failure ends the job (no retry follows): then the entry says failed."""
    if isinstance(exc, PermanentDeliveryError):
        return True
    if isinstance(exc, DeliveryOutcomeUnknownError) and mode == AT_MOST_ONCE:
        return True
    attempts = int((getattr(job, "opts", None) or {}).get("attempts") or 1)
    return int(getattr(job, "attemptsMade", 0) or 0) + 1 >= attempts


def _failure_entry(exc: PermanentDeliveryError | TransientDeliveryError,
                   recipients: list[str], last: bool) -> LogEntry:
    return LogEntry("failed" if last else "deferred", list(recipients), exc.code, str(exc),
                    dict(getattr(exc, "refused", {}) or {}))


def _suppressed_entry(suppressed: dict[str, dict[str, Any]]) -> LogEntry:
    return LogEntry("suppressed", list(suppressed), None, _why(suppressed),
                    {a: str(e.get("reason", "")) for a, e in suppressed.items()})


def _why(suppressed: dict[str, dict[str, Any]]) -> str:
    return "on the suppression list: " + "; ".join(
        f"{address} ({entry.get('reason', '?')}"
        + (f": {entry['reply']}" if entry.get("reply") else "") + ")"
        for address, entry in suppressed.items())


async def _suppress_refused(redis: aioredis.Redis, prefix: str, refused: dict[str, str],
                            code: int | None = None) -> None:
    """A permanent refusal of recipients puts them on the suppression list (a bounce)."""
    if not refused:
        return
    suppressions = SuppressionList(redis, prefix)
    for address, reply in refused.items():
        await suppressions.add(address, "bounce", by="smtp", reply=reply,
                               code=_code(reply) or code)


def _suppressed_result(message_id: str, suppressed: dict[str, dict[str, Any]]
                       ) -> dict[str, Any]:
    return {
        "message_id": message_id, "outcome": "suppressed", "accepted": [], "rejected": [],
        "rejected_replies": {}, "recipient_replies": {},
        "response": f"not sent: {_why(suppressed)}", "already_sent": False,
        "suppressed": {a: str(e.get("reason", "")) for a, e in suppressed.items()},
    }


async def put_back(job: Any, exc: PutBackError) -> NoReturn:
    """Not the job's fault (a live attempt is sending its message, or the transport is
    down): move the job to delayed for `exc.retry_in_ms`, without spending an attempt
    (bullmq's skipAttempt), and stop this run. A transport that is down also holds the
    worker: it takes no job until the transport's breaker closes."""
    token = getattr(job, "token", None)
    if not token:  # not run by a worker: nothing to move
        raise exc
    if isinstance(exc, TransportDownError):
        hold_worker(job, exc.gate)
    try:
        await job.moveToDelayed(int(time.time() * 1000) + exc.retry_in_ms, token)
    except Exception:
        # Our own lock is gone (the live attempt holds the job): the worker cannot finish
        # this run either way, and the other attempt completes the job.
        raise exc from None
    await job.log(f"{exc}: put back for {exc.retry_in_ms} ms")
    raise DelayedError(str(exc))


def _result(record: DeliveryRecord, already_sent: bool,
            suppressed: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "message_id": record["message_id"],
        "outcome": "sent",
        "accepted": record["accepted"],
        "rejected": record["rejected"],
        "rejected_replies": record["rejected_replies"],
        "recipient_replies": record["recipient_replies"],
        "response": record["response"],
        "already_sent": already_sent,
        "suppressed": {a: str(e.get("reason", "")) for a, e in (suppressed or {}).items()},
    }
