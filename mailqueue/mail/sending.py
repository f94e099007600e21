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
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import redis.asyncio as aioredis
from bullmq.custom_errors import DelayedError

from mailqueue.mail.delivery import Claim, DeliveryLog, DeliveryRecord
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
from mailqueue.worker_gates import hold_worker

if TYPE_CHECKING:
    from mailqueue.mail.handlers import MailService

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


async def send_once(service: MailService, job: Any, message: OutgoingMessage,
                    mode: DeliveryMode = AT_LEAST_ONCE) -> dict[str, Any]:
    """Send unless already delivered; record the delivery before returning.

    Some recipients refused (5xx) while others accepted: the others have the message, so
    the delivery is recorded, then the job fails naming the refused ones. A retry sends
    to the recipients without the message only (the record says who has it).
    Round trips in the normal path: the claim, and the record — which, in the native
    worker, goes out with the job's completion. Nothing is logged on the job then: its
    return value says what was sent; logs are for failures, retries and skipped sends.
    """
    redis: aioredis.Redis = service.redis or job.queue.client
    prefix: str = job.queue.prefix
    # The worker's own connection: its script pipe orders the record before the completion.
    pipe = getattr(job.queue, "script_pipe", None) if service.redis is None else None
    deliveries = DeliveryLog(redis, prefix, pipe=pipe)
    transport = await service.transport(redis, prefix)
    transport.breaker.check()  # down: put back before claiming anything
    claim = await deliveries.claim(message.message_id, job, at_most_once=mode == AT_MOST_ONCE)
    if not isinstance(claim, Claim):
        await job.log(
            f"already delivered {message.message_id} (accepted: "
            f"{', '.join(claim['accepted'])}); not sending it again"
        )
        return _result(claim, already_sent=True)
    recorded, token = claim.record, claim.token
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
    try:
        result = await transport.send(message)
    except (PermanentDeliveryError, TransientDeliveryError) as exc:
        if isinstance(exc, DeliveryOutcomeUnknownError) and mode == AT_MOST_ONCE:
            # The server may have it: keep the claim, mark it, leave it to an operator.
            await deliveries.mark_unconfirmed(message.message_id, job)
            raise UnconfirmedSendError(
                f"unconfirmed send: {message.message_id} may have been delivered ({exc}); "
                "check the recipient's mailbox / the outbox before retrying: a retry sends "
                "it again"
            ) from exc
        await deliveries.release(message.message_id, token)  # nothing (more) was sent
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
    await deliveries.record(message.message_id, token, record)
    if result.rejected:
        for address, reply in result.rejected.items():
            await job.log(f"refused by the server: {address}: {reply}")
        refused = "; ".join(f"{a}: {reply}" for a, reply in result.rejected.items())
        code = int(next(iter(result.rejected.values()))[:3])
        raise PermanentDeliveryError(
            f"the server refused {len(result.rejected)} recipient(s) ({refused}); "
            f"delivered to {', '.join(record['accepted'])}. A retry sends to the "
            "refused recipient(s) only", code,
        )
    return _result(record, already_sent=False)


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


def _result(record: DeliveryRecord, already_sent: bool) -> dict[str, Any]:
    return {
        "message_id": record["message_id"],
        "accepted": record["accepted"],
        "rejected": record["rejected"],
        "rejected_replies": record["rejected_replies"],
        "recipient_replies": record["recipient_replies"],
        "response": record["response"],
        "already_sent": already_sent,
    }
