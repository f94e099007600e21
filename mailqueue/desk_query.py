"""A delivery-log search as people type it, for the dashboard's /messages and the CLI.

One search box takes an address (`ada@example.com`), a domain (`@example.com`, or
`example.com`) or a Message-ID (`<emails.42@example.com>`, brackets optional): which one is
decided by the text's shape. An address and a Message-ID without brackets can look alike
(`emails.42@mail.example.com` is both): such a text is searched as an address first and, when
no entry has that recipient, as a Message-ID. Times are a span back from now (`90m`, `24h`,
`7d`, `2w`) or a UTC date or date and time (`2026-12-01`, `2026-12-01T08:30`); an `until`
date means the end of that day.

`list_suppressions` pages through the suppression list along its HSCAN cursor.

Every mistake is an InvalidSearchError (a ValueError) with one line saying what is wrong.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from mailqueue.desk import InvalidSearchError, MailDesk
from mailqueue.mail.message_log import OUTCOMES, MessageEntry
from mailqueue.mail.suppressions import REASONS, Suppression, SuppressionList

SearchKind = Literal["", "address", "domain", "message_id"]

# A span back from now: "24h", "7 d", "90m", "2w".
_SPAN = re.compile(r"^(\d{1,6})\s*(m|min|h|d|w)$", re.IGNORECASE)
_SPAN_MS = {"m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?Z?$")
# The spans offered on the page (value, label).
SINCE_CHOICES: tuple[tuple[str, str], ...] = (
    ("1h", "last hour"), ("24h", "last 24 h"), ("7d", "last 7 days"), ("30d", "last 30 days"),
)
_ENTRY_ID = re.compile(r"^\d{1,13}-\d{1,10}$")  # as MailDesk checks a cursor
# An address as the search box understands one: dot-atom local part, a dotted domain.
_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def parse_time(text: str, name: str, *, now_ms: int | None = None, end_of_day: bool = False
               ) -> int | None:
    """`text` as ms since the epoch (None when empty); `name` says which field is wrong."""
    value = text.strip()
    if not value:
        return None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    span = _SPAN.match(value)
    if span:
        return now - int(span.group(1)) * _SPAN_MS[span.group(2).lower()]
    try:
        if _DATE.match(value):
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            if end_of_day:
                day += timedelta(days=1, milliseconds=-1)
            return int(day.timestamp() * 1000)
        if _DATETIME.match(value):
            moment = datetime.fromisoformat(value.rstrip("Z").replace(" ", "T"))
            return int(moment.replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        pass  # 2026-13-45: the shape of a date, not a date
    raise InvalidSearchError(
        f"{name} must be a span like 24h or 7d, or a UTC date like 2026-12-01 "
        f"(or 2026-12-01T08:30), not {value[:40]!r}")


def classify(text: str) -> tuple[SearchKind, str]:
    """What the search box's text is: ("address" | "domain" | "message_id" | "", value);
    InvalidSearchError for a text that can be none of them (it holds a space)."""
    value = text.strip()
    if not value:
        return "", ""
    if any(c.isspace() for c in value):  # in no address, domain or Message-ID
        raise InvalidSearchError("search for an address, an @domain or a Message-ID, "
                                 "without spaces")
    if value.startswith("<") or value.endswith(">"):
        return "message_id", value
    if value.startswith("@"):
        return "domain", value
    if "@" not in value:
        return "domain", f"@{value}"
    if _ADDRESS.match(value) and value.count("@") == 1:
        return "address", value
    return "message_id", value


@dataclass
class MessageQuery:
    """The filters of a search, as typed (strings), checked when run."""

    text: str = ""  # the search box: address, @domain or Message-ID
    to: str = ""  # explicitly a recipient (address or @domain)
    message_id: str = ""  # explicitly a Message-ID
    outcome: str = ""
    template: str = ""
    since: str = ""
    until: str = ""
    before: str = ""
    limit: int = 50

    @classmethod
    def as_typed(cls, params: Any) -> MessageQuery:
        """The text filters of a query string (a mapping of str) as they are, unchecked: q,
        to, message_id, outcome, template, since, until, before."""
        def text(key: str) -> str:
            return str(params.get(key) or "")[:400]

        return cls(text=text("q"), to=text("to"), message_id=text("message_id"),
                   outcome=text("outcome"), template=text("template"), since=text("since"),
                   until=text("until"), before=text("before"))

    @classmethod
    def from_params(cls, params: Any, limit: int = 50) -> MessageQuery:
        """`as_typed`, and `limit` (InvalidSearchError unless a whole number)."""
        raw_limit = str(params.get("limit") or "").strip()
        if raw_limit and not raw_limit.isdigit():
            raise InvalidSearchError("limit must be a whole number between 1 and 500")
        query = cls.as_typed(params)
        query.limit = int(raw_limit[:6]) if raw_limit else limit
        return query

    def params(self) -> dict[str, str]:
        """The filters given, as query-string parameters (the next page's link adds before)."""
        values = {"q": self.text, "to": self.to, "message_id": self.message_id,
                  "outcome": self.outcome, "template": self.template, "since": self.since,
                  "until": self.until}
        return {k: v for k, v in values.items() if v}


@dataclass
class MessageSearch:
    """A search's answer: the entries, the cursor of the next page, what was searched."""

    entries: list[MessageEntry]
    next_before: str | None
    kind: SearchKind
    value: str
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def described(self) -> str:
        """What was searched, in words ('' for the whole log)."""
        if self.kind == "address":
            return f"recipient {self.value}"
        if self.kind == "domain":
            return f"recipients at {self.value.lstrip('@')}"
        if self.kind == "message_id":
            return f"Message-ID {self.value}"
        return ""


def resolve(query: MessageQuery, now_ms: int | None = None
            ) -> tuple[SearchKind, str, dict[str, Any]]:
    """What `query` searches (kind, value) and the log's filters, every one checked here,
    without Redis: a command line is refused before anything connects."""
    if sum(bool(v.strip()) for v in (query.text, query.to, query.message_id)) > 1:
        raise InvalidSearchError("give one of the search text, to and message_id")
    kind: SearchKind
    if query.to.strip():
        kind, value = classify(query.to)
        if kind == "message_id":
            raise InvalidSearchError("to must be an address or @domain")
    elif query.message_id.strip():
        kind, value = classify(query.message_id)  # no spaces
        kind = "message_id"
    else:
        kind, value = classify(query.text)
    outcome = query.outcome.strip()
    if outcome and outcome not in OUTCOMES:
        raise InvalidSearchError(f"outcome must be one of {', '.join(OUTCOMES)}")
    before = query.before.strip()
    if before and not _ENTRY_ID.match(before):
        raise InvalidSearchError("before must be an entry id like 1733300000000-0")
    if not 1 <= query.limit <= 500:
        raise InvalidSearchError("limit must be between 1 and 500")
    since_ms = parse_time(query.since, "since", now_ms=now_ms)
    until_ms = parse_time(query.until, "until", now_ms=now_ms, end_of_day=True)
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise InvalidSearchError("since must come before until")
    return kind, value, {"outcome": outcome, "template": query.template.strip(),
                         "since_ms": since_ms, "until_ms": until_ms, "before": before,
                         "limit": query.limit}


async def search_messages(desk: MailDesk, query: MessageQuery,
                          now_ms: int | None = None) -> MessageSearch:
    """Run `query` against the delivery log (see the module's docstring)."""
    kind, value, filters = resolve(query, now_ms)
    if kind == "message_id":
        entries, cursor = await desk.search_messages(message_id=value, **filters)
    else:
        entries, cursor = await desk.search_messages(recipient=value, **filters)
        ambiguous = kind == "address" and not query.to.strip()
        if ambiguous and not entries and cursor is None and not filters["before"]:
            found, more = await desk.search_messages(message_id=value, **filters)
            if found:
                entries, cursor, kind = found, more, "message_id"
    return MessageSearch(entries, cursor, kind, value, filters)


# --- the suppression list, page by page -------------------------------------------------------

async def list_suppressions(suppressions: SuppressionList, text: str = "",
                            reason: str | None = None, cursor: int = 0, limit: int = 50,
                            max_calls: int = 20) -> tuple[list[Suppression], int]:
    """Entries whose address contains `text` (any case), of one `reason` if given, newest
    first; and the HSCAN cursor of the next page (0: the end).

    A page is every entry of the HSCAN calls made (COUNT `limit`) until `limit` are found:
    HSCAN hands out whole buckets, so a page may hold a few more than `limit`, and none is
    ever dropped between pages (SuppressionList.search). At most `max_calls` calls a page,
    so a filter that matches little stays fast on a long list.
    """
    if reason and reason not in REASONS:
        raise InvalidSearchError(f"reason must be one of {', '.join(REASONS)}")
    return await suppressions.search(text, reason or None, cursor, limit, max_calls)
