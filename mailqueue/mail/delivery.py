"""No double send: a record of each message the SMTP server accepted, keyed by Message-ID.

The Message-ID is derived from the queue and job id, so every attempt of a job has the
same one. Before sending, a handler `claim()`s it: if a delivery is recorded, it gets that
record back and does not send again. Right after the server accepts the message,
`record()` stores the result — before the job completes, so a crash between "accepted"
and "job completed" does not send the mail again. When the server refused some recipients
and accepted the others, the record says which: a later run sends to the ones that do not
have the message yet, never again to the others.

The claim is tied to the sending attempt's lock (issue 11, point 7). In a worker it holds
the job's lock token (`lock:<token>`); another attempt finding it asks Redis whether that
token still holds the job's lock (`<prefix>:<queue>:<job id>:lock`). It does: that attempt
is alive and sending (DeliveryInProgressError: the job is put back, no attempt spent). It
does not: that attempt died or lost its lock mid-send, and the claim is taken over at once
— so a claim never outlives the lock it was taken under, whatever WORKER_LOCK_DURATION_MS
is, and there is nothing to renew. Outside a worker (a handler called without a lock) the
claim is `ttl:<random>`, held for `claim_ttl_ms`.

A claim taken over from a dead attempt is the unknown case: the dead attempt may have sent
the message before it died. At-least-once sends it again (the documented window);
at-most-once does not: it marks the message unconfirmed (`unconfirmed:<message-id>`,
holding the job's attemptsMade) and fails the job for an operator to decide. An operator's
retry runs with a higher attemptsMade (the failure counted one; stalled re-runs count
none), which is how the claim tells the operator's decision from an automatic re-run.

docs/mail.md describes the windows that remain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailqueue.keys import Keys
from mailqueue.lua import load_script
from mailqueue.mail.errors import DeliveryInProgressError, UnconfirmedSendError
from mailqueue.mail.key_namespace import NAMESPACE
from mailqueue.mail.message_log import (
    Attempt,
    LogEntry,
    MessageLog,
    Retention,
)
from mailqueue.mail.suppressions import suppression_keys

log = logging.getLogger(__name__)

DEFAULT_RECORD_TTL_S = 7 * 24 * 3600  # longer than any sane retry schedule
# How long a claim taken without a job lock (a handler called outside a worker) blocks other
# runs. Claims taken under a lock need no TTL of their own: they end with the lock (above);
# they expire with the record TTL only so that a removed job's claim does not stay for ever.
DEFAULT_CLAIM_TTL_MS = 30_000

class ScriptCalls(Protocol):
    """Where script calls go: a worker's pipelined command connection
    (mailqueue.runtime.scripts.ScriptPipe), whose calls are written in order."""

    def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
             ) -> asyncio.Future[Any]: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to send a message: `token` for record()/release(); `record` a partial
    delivery to complete (some recipients refused earlier), or None; `status` "claimed",
    "taken" (from an attempt that lost its lock) or "released" (an operator's retry of an
    unconfirmed at-most-once send)."""

    token: str
    record: DeliveryRecord | None
    status: str
    # Recipients on the suppression list (as looked up) -> their entries: not to be sent.
    suppressed: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AllSuppressed:
    """The claim's answer when every recipient is on the suppression list: nothing claimed."""

    suppressed: dict[str, dict[str, Any]]


class DeliveryRecord(TypedDict):
    message_id: str
    accepted: list[str]  # every recipient that has the message, over all attempts
    rejected: list[str]  # refused (5xx) at the last attempt: they do not have it
    response: str
    delivered_at: int  # ms since the epoch
    rejected_replies: dict[str, str]  # refused address -> the server's reply
    recipient_replies: dict[str, str]  # address -> the server's reply to its RCPT TO


class DeliveryLog:
    """Delivery records and send claims in Redis, under `<prefix>:__mailqueue__:`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        record_ttl_s: int = DEFAULT_RECORD_TTL_S,
        claim_ttl_ms: int = DEFAULT_CLAIM_TTL_MS,
        pipe: ScriptCalls | None = None,
        retention: Retention | None = None,
    ) -> None:
        """`pipe`: the running worker's script pipe on `redis`'s connection. The claim then
        shares a round trip with the other slots' calls, and the record is written without
        waiting for its reply: it goes out on the connection before the job's completion
        (which the worker writes on the same pipe), one round trip for both."""
        self.redis = redis
        self.prefix = prefix
        self.record_ttl_s = record_ttl_s
        self.claim_ttl_ms = claim_ttl_ms
        self.pipe = pipe
        self.retention = retention or Retention()
        self.messages = MessageLog(redis, prefix, self.retention)
        # EVALSHA, loaded on the first NOSCRIPT (hashing the text costs microseconds).
        self._claim_script = load_script(redis, "delivery_claim")
        self._record_script = load_script(redis, "delivery_record")

    def _call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        if self.pipe is not None:
            return self.pipe.call(script, keys, args)
        return script(keys=keys, args=args)

    def _record_key(self, message_id: str) -> str:
        return f"{self.prefix}:{NAMESPACE}:delivered:{message_id}"

    def _claim_key(self, message_id: str) -> str:
        return f"{self.prefix}:{NAMESPACE}:sending:{message_id}"

    def _mark_key(self, message_id: str) -> str:
        return f"{self.prefix}:{NAMESPACE}:unconfirmed:{message_id}"

    async def get(self, message_id: str) -> DeliveryRecord | None:
        """The recorded delivery of `message_id`, if any."""
        value = await self.redis.get(self._record_key(message_id))
        return _load(value)

    async def claim(
        self, message_id: str, job: Any = None, *, at_most_once: bool = False,
        check: list[str] | None = None,
    ) -> Claim | DeliveryRecord | AllSuppressed:
        """Take the right to send `message_id` for `job`'s attempt: a Claim, or the recorded
        (complete) delivery when there is one — then nothing is to be sent. `check`: the
        recipients to look up in the suppression list; all of them on it: AllSuppressed,
        nothing claimed; some: the Claim names them.

        Raises DeliveryInProgressError when a live attempt holds the claim, and, at most
        once, UnconfirmedSendError when a dead one did (it may have sent). One round trip.
        """
        lock_token = getattr(job, "token", None)
        queue = getattr(job, "queue", None)
        # The job's lock: whoever holds the claim is alive while its token is there. (No
        # job: the claim key, which never holds a bare token.)
        lock_key = (Keys(queue.prefix, queue.name).lock(str(job.id)) if queue is not None
                    else self._claim_key(message_id))
        if lock_token:
            token, ttl_ms = f"lock:{lock_token}", self.record_ttl_s * 1000
        else:
            token, ttl_ms = f"ttl:{uuid.uuid4().hex}", self.claim_ttl_ms
        attempts = int(getattr(job, "attemptsMade", 0) or 0)
        reply = await self._call(
            self._claim_script,
            [self._record_key(message_id), self._claim_key(message_id), lock_key,
             self._mark_key(message_id), suppression_keys(self.prefix)[0]],
            [token, ttl_ms, "1" if at_most_once else "0", attempts, self.record_ttl_s,
             *(address.lower() for address in check or ())],
        )
        status, recorded = _text(reply[0]), _load(reply[1] or None)
        if status == "recorded":
            assert recorded is not None
            return recorded
        suppressed = _suppressed(reply[3] if len(reply) > 3 else [], check or [])
        if status == "suppressed":
            return AllSuppressed(suppressed)
        if status == "busy":
            raise DeliveryInProgressError(
                f"another attempt is sending {message_id} right now; this job runs again "
                f"when it is done (no attempt spent)", retry_in_ms=max(int(reply[2]), 100),
            )
        if status == "unconfirmed":
            raise UnconfirmedSendError(
                f"unconfirmed send: {message_id} may have been delivered (an earlier attempt "
                "stopped after sending it and before the server's answer was recorded); "
                "check the recipient's mailbox / the outbox before retrying: a retry sends "
                "it again"
            )
        return Claim(token, recorded, status, suppressed)

    async def mark_unconfirmed(self, message_id: str, job: Any) -> None:
        """At most once, after a send whose outcome is unknown: the claim stays, and the
        mark makes the next run fail the same way unless it is an operator's retry."""
        attempts = int(getattr(job, "attemptsMade", 0) or 0)
        await self.redis.set(self._mark_key(message_id), attempts, ex=self.record_ttl_s)

    async def record(self, message_id: str, token: str, record: DeliveryRecord,
                     entries: list[tuple[LogEntry, Attempt]]) -> None:
        """Store the delivery (kept `record_ttl_s`), release the claim and write the
        attempt's delivery-log `entries`: one script call.

        On a worker's pipe the call shares a write with the other slots' calls.
        """
        keys = [self._record_key(message_id), self._claim_key(message_id),
                self._mark_key(message_id), *self.messages.keys_for(entries[0][1])]
        args = [json.dumps(record), self.record_ttl_s,
                *self.retention.argv(entries, int(time.time() * 1000))]
        # Awaited: the record must be in Redis before the job can complete.
        try:
            await self._call(self._record_script, keys, args)
        except (RedisConnectionError, RedisTimeoutError):
            if self.pipe is None:
                raise
            # The message went out and Redis is away (restarting, failing over): the pipe
            # fails at once, but redis-py's client retries with back-off until Redis is
            # back. Without the record, the job's re-run would send it again (20 duplicates
            # in 1,000 when tests/faults/test_redis_restart kills Redis under load).
            await self._record_script(keys=keys, args=args)

    async def log(self, entries: list[tuple[LogEntry, Attempt]], wait: bool = False) -> int:
        """Write delivery-log entries of an attempt that sent nothing (deferred, failed,
        suppressed). On the worker's pipe it does not wait for the reply unless `wait`.
        Returns a campaign's send errors in a row (0 when not waited for, or no campaign)."""
        reply = self._call(self.messages.write_script, self.messages.keys_for(entries[0][1]),
                           self.retention.argv(entries, int(time.time() * 1000)))
        if self.pipe is not None and not wait:
            reply.add_done_callback(_log_failed_entries)
            return 0
        return int((await reply)[0])

    async def release(self, message_id: str, token: str) -> None:
        """Give the claim back after a failed send, if it is still ours."""
        key = self._claim_key(message_id)
        current = await self.redis.get(key)
        if current is not None and _text(current) == token:
            await self.redis.delete(key)


def _log_failed_entries(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("delivery log entries not written: %s", done.exception())


def _suppressed(flat: list[Any], asked: list[str]) -> dict[str, dict[str, Any]]:
    """{address as asked: entry} from the claim's flat [lowercased, JSON, ...] reply."""
    by_lower = {address.lower(): address for address in asked}
    found: dict[str, dict[str, Any]] = {}
    for lower, raw in zip(flat[::2], flat[1::2], strict=True):
        try:
            entry = json.loads(_text(raw))
        except ValueError:
            entry = {"reason": "unknown"}
        found[by_lower.get(_text(lower), _text(lower))] = entry
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _load(value: Any) -> DeliveryRecord | None:
    if value is None:
        return None
    data = json.loads(_text(value))
    return DeliveryRecord(
        message_id=data["message_id"],
        accepted=list(data.get("accepted", [])),
        rejected=list(data.get("rejected", [])),
        response=data.get("response", ""),
        delivered_at=int(data.get("delivered_at", 0)),
        # Records written before these fields existed have neither.
        rejected_replies=dict(data.get("rejected_replies", {})),
        recipient_replies=dict(data.get("recipient_replies", {})),
    )
