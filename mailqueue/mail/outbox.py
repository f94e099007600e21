"""The outbox: what the development sink (mailqueue/mail/sink.py) received, in Redis.

A capped Redis stream, `<prefix>:__mailqueue__:outbox` (the newest 1,000 by default): the
sink adds each message it receives; any process — the dashboard's outbox page, a test,
another worker — lists and reads them through `Outbox`, each message's parts decoded.
"""

from __future__ import annotations

import json
import time
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from typing import Any, TypedDict

import redis.asyncio as aioredis

from mailqueue.mail.key_namespace import NAMESPACE

DEFAULT_MAX_MESSAGES = 1000


def outbox_key(prefix: str) -> str:
    return f"{prefix}:{NAMESPACE}:outbox"


class OutboxSummary(TypedDict):
    """One received message, as the outbox list shows it."""

    id: str  # the stream id: a timestamp-ordered, unique key for get_message()
    message_id: str
    received_at: int  # ms since the epoch
    envelope_from: str
    envelope_to: list[str]
    from_: str
    to: str
    subject: str
    size: int


class OutboxMessage(OutboxSummary):
    """One received message in full: the raw source and its decoded parts."""

    raw: str
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    attachments: list[str]


def _decoded(value: str | None) -> str:
    if not value:
        return ""
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


class Outbox:
    """Read and write the sink's capped store of received messages."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, max_messages: int = DEFAULT_MAX_MESSAGES
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.key = outbox_key(prefix)
        self.max_messages = max_messages

    async def add(self, envelope_from: str, envelope_to: list[str], raw: bytes) -> str:
        parsed = message_from_bytes(raw)
        fields: dict[Any, Any] = {
            "message_id": parsed.get("Message-ID", ""),
            "received_at": int(time.time() * 1000),
            "envelope_from": envelope_from,
            "envelope_to": json.dumps(envelope_to),
            "from": _decoded(parsed.get("From")),
            "to": _decoded(parsed.get("To")),
            "subject": _decoded(parsed.get("Subject")),
            "size": len(raw),
            "raw": raw.decode("utf-8", "replace"),
        }
        stream_id = await self.redis.xadd(
            self.key, fields, maxlen=self.max_messages, approximate=False
        )
        return stream_id if isinstance(stream_id, str) else stream_id.decode()

    async def list_messages(self, n: int = 50) -> list[OutboxSummary]:
        """The newest `n` messages, newest first, without their source."""
        entries: Any = await self.redis.xrevrange(self.key, count=n) if n > 0 else []
        return [self._summary(_text(stream_id), _fields(fields)) for stream_id, fields in entries]

    async def get_message(self, message_id: str) -> OutboxMessage | None:
        """One message by its stream id (from list_messages), or None when gone."""
        try:
            entries: Any = await self.redis.xrange(self.key, message_id, message_id, count=1)
        except aioredis.ResponseError:
            return None  # not a stream id
        if not entries:
            return None
        stream_id, raw_fields = entries[0]
        fields = _fields(raw_fields)
        summary = self._summary(_text(stream_id), fields)
        raw = fields.get("raw", "")
        parsed = message_from_bytes(raw.encode("utf-8", "surrogateescape"))
        text = html = None
        attachments: list[str] = []
        for part in parsed.walk():
            if part.is_multipart():
                continue
            filename = part.get_filename()
            if filename or part.get_content_disposition() == "attachment":
                attachments.append(_decoded(filename) if filename else "(unnamed)")
            elif part.get_content_type() == "text/plain" and text is None:
                text = _part_text(part)
            elif part.get_content_type() == "text/html" and html is None:
                html = _part_text(part)
        return OutboxMessage(
            **summary,
            raw=raw,
            headers=[(name, _decoded(value)) for name, value in parsed.items()],
            text=text,
            html=html,
            attachments=attachments,
        )

    async def count(self) -> int:
        return int(await self.redis.xlen(self.key))

    async def clear(self) -> None:
        await self.redis.delete(self.key)

    @staticmethod
    def _summary(stream_id: str, fields: dict[str, str]) -> OutboxSummary:
        return OutboxSummary(
            id=stream_id,
            message_id=fields.get("message_id", ""),
            received_at=int(fields.get("received_at", 0) or 0),
            envelope_from=fields.get("envelope_from", ""),
            envelope_to=json.loads(fields.get("envelope_to", "[]")),
            from_=fields.get("from", ""),
            to=fields.get("to", ""),
            subject=fields.get("subject", ""),
            size=int(fields.get("size", 0) or 0),
        )


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}
