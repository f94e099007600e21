"""No double send: a record of each message the SMTP server accepted, keyed by Message-ID.

The Message-ID is derived from the queue and job id, so every attempt of a job has the
same one. Before sending, a handler `claim()`s it: if a delivery is recorded, it gets that
record back and does not send again; if another attempt holds the claim (a stalled job
running twice), it gets `DeliveryInProgressError` and is retried later. Right after the
server accepts the message, `record()` stores the result — before the job completes, so
a crash between "accepted" and "job completed" does not send the mail again. When the
server refused some recipients and accepted the others, the record says which: a later
run sends to the ones that do not have the message yet, never again to the others.

The window that remains: a crash (or a lost connection) after the server accepted the
message and before the record is written. docs/mail.md describes it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, TypedDict

import redis.asyncio as aioredis

from mailqueue.mail.errors import DeliveryInProgressError
from mailqueue.mail.sink import NAMESPACE

DEFAULT_RECORD_TTL_S = 7 * 24 * 3600  # longer than any sane retry schedule
# How long a run that died mid-send (SIGKILL) blocks the next run of its job. A stalled job
# is re-run after ~30 s at the soonest (bullmq's stalledInterval), so a claim of the same
# length has usually expired by then; a run that finds it held is retried with backoff.
DEFAULT_CLAIM_TTL_MS = 30_000


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
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.record_ttl_s = record_ttl_s
        self.claim_ttl_ms = claim_ttl_ms

    def _record_key(self, message_id: str) -> str:
        return f"{self.prefix}:{NAMESPACE}:delivered:{message_id}"

    def _claim_key(self, message_id: str) -> str:
        return f"{self.prefix}:{NAMESPACE}:sending:{message_id}"

    async def get(self, message_id: str) -> DeliveryRecord | None:
        value = await self.redis.get(self._record_key(message_id))
        return _load(value)

    async def claim(self, message_id: str) -> tuple[str | None, DeliveryRecord | None]:
        """Take the right to send `message_id`: (token, None), or (None, the recorded delivery).

        A record with refused recipients (the others have the message) is partial: the
        claim is kept and (token, record) returned, so that this run sends to the refused
        ones only, and no other run at the same time. One round trip: the claim and the
        lookup run in one pipeline.
        """
        token = uuid.uuid4().hex
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._record_key(message_id))
            pipe.set(self._claim_key(message_id), token, nx=True, px=self.claim_ttl_ms)
            recorded, claimed = await pipe.execute()
        record = _load(recorded)
        if record is not None and not record["rejected"]:
            if claimed:
                await self.redis.delete(self._claim_key(message_id))
            return None, record
        if not claimed:  # a partial record too: the other run sends to the refused ones
            raise DeliveryInProgressError(
                f"another attempt is sending {message_id} right now; retrying later"
            )
        return token, record  # record: None, or partial (some recipients refused)

    async def record(self, message_id: str, token: str, record: DeliveryRecord) -> None:
        """Store the delivery (kept `record_ttl_s`) and release the claim, in one round trip."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._record_key(message_id), json.dumps(record), ex=self.record_ttl_s)
            pipe.delete(self._claim_key(message_id))
            await pipe.execute()

    async def release(self, message_id: str, token: str) -> None:
        """Give the claim back after a failed send, if it is still ours."""
        key = self._claim_key(message_id)
        current = await self.redis.get(key)
        if current is not None and _text(current) == token:
            await self.redis.delete(key)


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
