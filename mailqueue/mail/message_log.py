"""The delivery log: every send attempt our workers make, searchable by recipient and Message-ID.

"Did Ada get her reset e-mail?" An entry per attempt and outcome: the recipients, the
Message-ID, template, subject, queue, job id, attempt, the SMTP reply (code and text), the
time and the outcome — `sent`, `deferred` (a temporary failure: the job retries), `failed`
(a permanent one) or `suppressed` (not sent: the address is on the suppression list). An
attempt where the server took the message for some recipients and refused others writes two
entries, one per outcome, so that a search for a recipient shows that recipient's outcome.

Layout under `<prefix>:__mailqueue__:` — a stream and three lexicographic indexes, written
together by one script (so they never disagree; mailqueue/lua/message_log_functions.lua):
- `messages` (stream): one entry per attempt and outcome, its id the time of writing;
- `messages:by-address`, `messages:by-domain`, `messages:by-id` (sorted sets, all scores 0):
  `<address>\\0<entry id>` (lowercased, one member per recipient), `<domain>\\0<entry id>`,
  `<Message-ID>\\0<entry id>`, the entry id zero-padded so that text order is time order:
  the entries of an address, a domain or a message, newest first and page by page, are a
  ZREVRANGEBYLEX on a prefix, O(log n) at a million entries.
Bounded by count and age (MAIL_LOG_MAX_ENTRIES, MAIL_LOG_MAX_AGE_DAYS): each write removes up
to 50 of the oldest entries when the log is over either limit (with their index members),
so the log stays within its bounds however fast it is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import redis.asyncio as aioredis

from mailqueue.lua import load_script
from mailqueue.mail.key_namespace import NAMESPACE

Outcome = Literal["sent", "deferred", "failed", "suppressed"]
OUTCOMES: tuple[Outcome, ...] = ("sent", "deferred", "failed", "suppressed")
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_AGE_DAYS = 30
_REPLY_MAX = 500


def campaign_key(prefix: str, campaign: str) -> str:
    """A campaign's hash (mailqueue.campaigns): counts per outcome, written here."""
    return f"{prefix}:{NAMESPACE}:campaign:{campaign}"


def message_log_keys(prefix: str) -> list[str]:
    """The stream and its indexes: by address, by domain, by Message-ID."""
    base = f"{prefix}:{NAMESPACE}:messages"
    return [base, f"{base}:by-address", f"{base}:by-domain", f"{base}:by-id"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one send attempt is about: written with each of its entries."""

    message_id: str
    queue: str
    job_id: str
    attempt: int
    template: str | None
    subject: str
    size: int = 0  # bytes of the message
    campaign: str | None = None  # the campaign the job belongs to (mailqueue.campaigns)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry: an attempt's outcome for some of its recipients."""

    outcome: Outcome
    recipients: list[str]
    code: int | None = None
    reply: str = ""  # the server's reply, or the reason (suppressed)
    replies: dict[str, str] = field(default_factory=dict)  # recipient -> its RCPT reply

    def fields(self, attempt: Attempt, at_ms: int) -> list[str]:
        """The stream entry's fields (name, value, ...)."""
        values = {
            "t": str(at_ms), "out": self.outcome, "to": ",".join(self.recipients),
            "mid": attempt.message_id, "q": attempt.queue, "j": attempt.job_id,
            "a": str(attempt.attempt), "tpl": attempt.template or "", "subj": attempt.subject,
            "code": "" if self.code is None else str(self.code),
            "reply": self.reply[:_REPLY_MAX], "size": str(attempt.size),
        }
        if self.replies:
            values["replies"] = json.dumps(self.replies)
        if attempt.campaign:
            values["camp"] = attempt.campaign
        return [item for pair in values.items() for item in pair]


@dataclass(frozen=True, slots=True)
class Retention:
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_age_days: float = DEFAULT_MAX_AGE_DAYS

    def argv(self, entries: Sequence[tuple[LogEntry, Attempt]], now_ms: int) -> list[Any]:
        """log_entries' arguments for `entries`."""
        oldest = now_ms - int(self.max_age_days * 86_400_000)
        args: list[Any] = [self.max_entries, oldest, len(entries)]
        for entry, attempt in entries:
            fields = entry.fields(attempt, now_ms)
            args.append(len(fields))
            args.extend(fields)
        return args


class MessageEntry(TypedDict):
    """One delivery-log entry as the API, the pages and the command line show it."""

    id: str  # the stream entry's id
    at: int  # ms since the epoch
    outcome: str
    recipients: list[str]
    message_id: str
    queue: str
    job_id: str
    attempt: int
    template: str | None
    subject: str
    code: int | None  # the SMTP reply's code
    reply: str  # the server's reply, or the reason (suppressed)
    size: int  # bytes of the message
    replies: dict[str, str]  # recipient -> its RCPT reply
    campaign: str | None


def parse_entry(entry_id: str, fields: dict[str, str]) -> MessageEntry:
    """A stream entry as the API and the pages show it."""
    code = fields.get("code") or ""
    return {
        "id": entry_id,
        "at": int(fields.get("t") or entry_id.split("-")[0]),
        "outcome": fields.get("out", ""),
        "recipients": [r for r in fields.get("to", "").split(",") if r],
        "message_id": fields.get("mid", ""),
        "queue": fields.get("q", ""),
        "job_id": fields.get("j", ""),
        "attempt": int(fields.get("a") or 0),
        "template": fields.get("tpl") or None,
        "subject": fields.get("subj", ""),
        "code": int(code) if code.isdigit() else None,
        "reply": fields.get("reply", ""),
        "size": int(fields.get("size") or 0),
        "replies": json.loads(fields["replies"]) if fields.get("replies") else {},
        "campaign": fields.get("camp") or None,
    }


class MessageLog:
    """Writes and searches the delivery log of one prefix."""

    def __init__(self, redis: aioredis.Redis, prefix: str,
                 retention: Retention | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention = retention or Retention()
        self.keys = message_log_keys(prefix)
        # mailqueue/lua/message_log_write.lua; DeliveryLog.log calls it on a worker's pipe.
        self.write_script = load_script(redis, "message_log_write")

    async def write(self, entries: Sequence[tuple[LogEntry, Attempt]]) -> list[str]:
        """Write entries (one round trip); their ids."""
        if not entries:
            return []
        reply = await self.write_script(keys=self.keys_for(entries[0][1]),
                                args=self.retention.argv(entries, int(time.time() * 1000)))
        return [_text(i) for i in reply[1]]

    def keys_for(self, attempt: Attempt) -> list[str]:
        """The log's keys, and the campaign's hash when the attempt is a campaign's."""
        if attempt.campaign:
            return [*self.keys, campaign_key(self.prefix, attempt.campaign)]
        return self.keys

    async def get(self, entry_id: str) -> MessageEntry | None:
        found = await self.redis.xrange(self.keys[0], entry_id, entry_id)
        if not found:
            return None
        return parse_entry(_text(found[0][0]), _fields(found[0][1]))

    async def count(self) -> int:
        return int(await self.redis.xlen(self.keys[0]))

    async def search(
        self,
        *,
        recipient: str | None = None,
        message_id: str | None = None,
        outcome: str | None = None,
        template: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        before: str | None = None,
        limit: int = 50,
        scan_limit: int = 5_000,
    ) -> tuple[list[MessageEntry], str | None]:
        """Entries, newest first, matching every filter given; and the cursor for the next
        page (`before`), or None at the end.

        `recipient`: an address (exact, any case) or `@domain` (every address there);
        `message_id`: exact, with or without the angle brackets. Either is answered from its
        index; without them the log is read backwards from `until_ms`. Other filters are
        applied to what is read, reading at most `scan_limit` entries per call.
        """
        # One more than asked: a next page exists only if it is found.
        if recipient or message_id:
            page, cursor = await self._search_indexed(
                recipient, message_id, before, limit + 1, scan_limit, outcome, template,
                since_ms, until_ms)
        else:
            page, cursor = await self._search_stream(before, until_ms, since_ms, scan_limit,
                                                     outcome, template, limit + 1)
        if len(page) > limit:
            return page[:limit], page[limit - 1]["id"]
        return page, cursor

    async def _search_stream(self, before: str | None, until_ms: int | None,
                             since_ms: int | None, scan_limit: int, outcome: str | None,
                             template: str | None, limit: int
                             ) -> tuple[list[MessageEntry], str | None]:
        entries, done = await self._read_back(before, until_ms, since_ms, scan_limit,
                                              outcome, template, limit)
        page: list[MessageEntry] = []
        for entry in entries:
            if _matches(entry, outcome, template, since_ms, until_ms):
                page.append(entry)
                if len(page) == limit:
                    return page, entry["id"]
        # The scan limit stopped the read: the cursor goes on from the last entry read.
        return page, None if done or not entries else entries[-1]["id"]

    async def _search_indexed(self, recipient: str | None, message_id: str | None,
                              before: str | None, limit: int, scan_limit: int,
                              outcome: str | None, template: str | None,
                              since_ms: int | None, until_ms: int | None
                              ) -> tuple[list[MessageEntry], str | None]:
        if message_id:
            key, prefix = self.keys[3], _bracketed(message_id.strip()) + "\0"
        else:
            assert recipient is not None
            text = recipient.strip().lower()
            if text.startswith("@") or "@" not in text:
                key, prefix = self.keys[2], text.lstrip("@") + "\0"
            else:
                key, prefix = self.keys[1], text + "\0"
        filtered = bool(outcome or template or since_ms or until_ms)
        chunk = 200 if filtered else limit
        high = f"({prefix}{_padded(before)}" if before else f"[{prefix}\xff"
        page: list[MessageEntry] = []
        scanned = 0
        while scanned < scan_limit:
            members = await self.redis.zrevrangebylex(key, high, f"[{prefix}", 0, chunk)
            ids = [_unpadded(_text(m).rsplit("\0", 1)[1]) for m in members]
            scanned += len(ids)
            for entry in await self._entries(ids):
                if _matches(entry, outcome, template, since_ms, until_ms):
                    page.append(entry)
                    if len(page) == limit:
                        return page, entry["id"]
            if len(ids) < chunk:
                return page, None
            high = f"({prefix}{_padded(ids[-1])}"
        return page, ids[-1] if ids else None  # scan limit reached: go on from here

    async def _entries(self, ids: list[str]) -> list[MessageEntry]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(self.keys[0], entry_id, entry_id)
            found = await pipe.execute()
        # A member whose entry was trimmed meanwhile (it and its members go in one script,
        # but a read may straddle two writes) is skipped.
        return [parse_entry(_text(rows[0][0]), _fields(rows[0][1])) for rows in found if rows]

    async def _read_back(self, before: str | None, until_ms: int | None,
                         since_ms: int | None, scan_limit: int, outcome: str | None,
                         template: str | None, limit: int
                         ) -> tuple[list[MessageEntry], bool]:
        high = f"({before}" if before else (str(until_ms) if until_ms else "+")
        low = str(since_ms) if since_ms else "-"
        read: list[MessageEntry] = []
        matched = 0
        chunk = 500 if outcome or template else limit
        while len(read) < scan_limit:
            rows = await self.redis.xrevrange(self.keys[0], high, low, count=chunk)
            if not rows:
                return read, True
            for entry_id, fields in rows:
                entry = parse_entry(_text(entry_id), _fields(fields))
                read.append(entry)
                if _matches(entry, outcome, template, None, None):
                    matched += 1
                    if matched == limit:
                        return read, False
            high = f"({_text(rows[-1][0])}"
        return read, False


def _matches(entry: MessageEntry, outcome: str | None, template: str | None,
             since_ms: int | None, until_ms: int | None) -> bool:
    return ((not outcome or entry["outcome"] == outcome)
            and (not template or entry["template"] == template)
            and (since_ms is None or entry["at"] >= since_ms)
            and (until_ms is None or entry["at"] <= until_ms))


def _bracketed(message_id: str) -> str:
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _padded(entry_id: str) -> str:
    """An entry id as the indexes hold it: fixed width, so text order is time order."""
    ms, _, seq = entry_id.partition("-")
    return f"{int(ms):013d}-{int(seq or 0):06d}"


def _unpadded(member_id: str) -> str:
    ms, _, seq = member_id.partition("-")
    return f"{int(ms)}-{int(seq)}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}
