"""The suppression list: addresses that must not get mail, and why.

An address lands here when the SMTP server refuses it permanently at send time (a 5xx reply
to RCPT TO or to DATA: `bounce`, with the reply), when its owner unsubscribes
(`unsubscribe`, RFC 8058 one-click), or when an operator adds it (`manual`, with a note).
A job for a suppressed address does not send: it completes with the result "suppressed"
and the reason (mailqueue.mail.sending). Templates whose mail must go even so (a password
reset) say `{"ignore_suppressions": true}` in their settings.json.

Layout under `<prefix>:__mailqueue__:`: `suppressed` (hash: address -> JSON entry) and
`suppressed:counts` (hash: reason -> number of addresses), kept in step by one script per
change (mailqueue/lua/suppression_add.lua, suppression_remove.lua). Addresses are stored
lowercased: mailbox names are case-insensitive in practice, and a refusal of `Ada@X.org`
must stop mail to `ada@x.org`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import redis.asyncio as aioredis

from mailqueue.lua import load_script
from mailqueue.mail.addresses import parse_address
from mailqueue.mail.errors import InvalidMailDataError
from mailqueue.mail.key_namespace import NAMESPACE

Reason = Literal["bounce", "unsubscribe", "manual", "complaint"]
REASONS: tuple[Reason, ...] = ("bounce", "unsubscribe", "manual", "complaint")
NOTE_MAX = 500


class SuppressionEntry(TypedDict):
    """A Suppression as stored (JSON, in the list's hash) and as the API shows it."""

    address: str
    reason: str
    at: int
    by: str
    note: str
    reply: str
    code: int | None


@dataclass(frozen=True, slots=True)
class Suppression:
    address: str
    reason: str
    at: int  # ms since the epoch
    by: str  # "smtp", "unsubscribe", or the operator
    note: str = ""
    reply: str = ""  # the server's reply, for a bounce
    code: int | None = None

    def as_dict(self) -> SuppressionEntry:
        return {"address": self.address, "reason": self.reason, "at": self.at, "by": self.by,
                "note": self.note, "reply": self.reply, "code": self.code}


def suppression_keys(prefix: str) -> tuple[str, str]:
    """The list's hash and its counts' hash."""
    base = f"{prefix}:{NAMESPACE}:suppressed"
    return base, f"{base}:counts"


def normalize_address(value: Any) -> str:
    """The form stored and looked up: the bare address, lowercased. Refuses anything else."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidMailDataError("an e-mail address is required")
    return parse_address(value.strip(), "address").email.lower()


class SuppressionList:
    """Add, remove, look up and list suppressed addresses (one Redis round trip each)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.key, self.counts_key = suppression_keys(prefix)
        self._add = load_script(redis, "suppression_add")
        self._remove = load_script(redis, "suppression_remove")

    async def add(self, address: str, reason: Reason, *, by: str, note: str = "",
                  reply: str = "", code: int | None = None, replace: bool = False) -> bool:
        """Suppress `address`; False when it was already (its first entry is kept, unless
        `replace`). Idempotent: a second unsubscribe changes nothing."""
        if reason not in REASONS:
            raise InvalidMailDataError(f"reason must be one of {', '.join(REASONS)}")
        email = normalize_address(address)
        entry = Suppression(email, reason, int(time.time() * 1000), by,
                            note.strip()[:NOTE_MAX], reply[:NOTE_MAX], code)
        added = await self._add(keys=[self.key, self.counts_key], args=[
            email, json.dumps(entry.as_dict()), reason, "1" if replace else "0"])
        return bool(added)

    async def remove(self, address: str) -> Suppression | None:
        """Lift the suppression of `address`; the entry removed, or None if there was none."""
        old = await self._remove(keys=[self.key, self.counts_key],
                                 args=[normalize_address(address)])
        return _entry(old) if old else None

    async def get(self, address: str) -> Suppression | None:
        return _entry(await self.redis.hget(self.key, normalize_address(address)))

    async def check(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        """The suppressed ones among `addresses` (as given), with their entries."""
        given = list(addresses)
        if not given:
            return {}
        values = await self.redis.hmget(self.key, [a.lower() for a in given])
        return {a: e for a, v in zip(given, values, strict=True)
                if v is not None and (e := _entry(v)) is not None}

    async def count(self) -> int:
        return int(await self.redis.hlen(self.key))

    async def counts(self) -> dict[str, int]:
        """Addresses per reason (every reason, 0 included)."""
        raw = await self.redis.hgetall(self.counts_key)
        found = {_text(k): int(v) for k, v in raw.items()}
        return {reason: max(found.get(reason, 0), 0) for reason in REASONS}

    async def search(self, text: str = "", reason: str | None = None, cursor: int = 0,
                     limit: int = 50, max_calls: int = 20) -> tuple[list[Suppression], int]:
        """Entries whose address contains `text` (any case), of one `reason` if given, newest
        first; and the HSCAN cursor of the next page (0: the end).

        A page is every entry of the HSCAN calls made (COUNT `limit`) until `limit` are found:
        HSCAN hands out whole buckets, so a page may hold a few more than `limit`, and none
        is dropped between pages. At most `max_calls` calls a page, so a filter that matches
        little stays fast on a long list.
        """
        pattern = f"*{_glob_escape(text.strip().lower())}*" if text.strip() else "*"
        found: list[Suppression] = []
        for _ in range(max_calls):
            cursor, chunk = await self.redis.hscan(self.key, cursor, match=pattern, count=limit)
            assert isinstance(chunk, dict)
            for value in chunk.values():
                entry = _entry(value)
                if entry is not None and (reason is None or entry.reason == reason):
                    found.append(entry)
            if cursor == 0 or len(found) >= limit:
                break
        found.sort(key=lambda e: e.at, reverse=True)
        return found, int(cursor)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(value: Any) -> Suppression | None:
    if value is None:
        return None
    try:
        data = json.loads(_text(value))
        return Suppression(address=str(data["address"]), reason=str(data["reason"]),
                           at=int(data.get("at", 0)), by=str(data.get("by", "")),
                           note=str(data.get("note", "")), reply=str(data.get("reply", "")),
                           code=data.get("code"))
    except (ValueError, KeyError, TypeError):
        return None
