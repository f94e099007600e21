"""The mail desk: the questions people who send mail ask, answered from Redis.

`MailManager.desk` — the delivery log ("did Ada get her reset e-mail?") and the suppression
list (who must not get mail), with the operator's changes to the list audited like every
other action.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from mailqueue.errors import MailQueueError
from mailqueue.mail.message import make_message_id
from mailqueue.mail.message_log import OUTCOMES, MessageEntry, MessageLog, Retention
from mailqueue.mail.outbox import outbox_key
from mailqueue.mail.suppressions import REASONS, Reason, Suppression, SuppressionList

Audit = Callable[[str, str, str, str, str], Awaitable[Any]]

_CURSOR = re.compile(r"^\d{1,13}-\d{1,10}$")
# The outbox copy of a sent message is stored during its DATA, just before its log entry:
# looked for among the outbox entries of this window (ms before, after) around the entry.
OUTBOX_WINDOW_MS = (120_000, 10_000)
OUTBOX_SCANNED = 200


class InvalidSearchError(MailQueueError, ValueError):
    """A delivery-log or suppression-list search with a filter of the wrong form."""


class MailDesk:
    """The delivery log and the suppression list of one prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str, audit: Audit,
                 retention: Retention | None = None, sender_domain: str = "localhost") -> None:
        self.messages = MessageLog(client, prefix, retention)
        self.suppressions = SuppressionList(client, prefix)
        self._audit = audit
        self._sender_domain = sender_domain
        self._client = client
        self._outbox_key = outbox_key(prefix)

    # --- the delivery log ---------------------------------------------------------------------

    async def search_messages(
        self, *, recipient: str = "", message_id: str = "", outcome: str = "",
        template: str = "", since_ms: int | None = None, until_ms: int | None = None,
        before: str = "", limit: int = 50,
    ) -> tuple[list[MessageEntry], str | None]:
        """Delivery-log entries, newest first, and the cursor of the next page (or None).

        `recipient`: an address or `@domain`; `message_id`: with or without `<>`. Filters
        are checked here: a bad one raises InvalidSearchError (a 400 on the dashboard).
        """
        if outcome and outcome not in OUTCOMES:
            raise InvalidSearchError(f"outcome must be one of {', '.join(OUTCOMES)}")
        if before and not _CURSOR.match(before):
            raise InvalidSearchError("before must be an entry id like 1733300000000-0")
        if not 1 <= limit <= 500:
            raise InvalidSearchError("limit must be between 1 and 500")
        recipient, message_id = recipient.strip(), message_id.strip()
        if recipient and (len(recipient) > 320 or any(c.isspace() for c in recipient)):
            raise InvalidSearchError("recipient must be an address or @domain, no spaces")
        return await self.messages.search(
            recipient=recipient or None, message_id=message_id or None,
            outcome=outcome or None, template=template.strip() or None,
            since_ms=since_ms, until_ms=until_ms, before=before or None, limit=limit)

    async def message(self, entry_id: str) -> MessageEntry | None:
        if not _CURSOR.match(entry_id):
            return None
        return await self.messages.get(entry_id)

    async def job_messages(self, queue: str, job_id: str, limit: int = 100
                           ) -> list[MessageEntry]:
        """Every logged attempt of a job's message (its Message-ID comes from its id)."""
        message_id = make_message_id(queue, job_id, self._sender_domain)
        entries, _ = await self.messages.search(message_id=message_id, limit=limit)
        return entries

    async def outbox_copy(self, message_id: str, at_ms: int) -> str | None:
        """The outbox stream id of the development sink's copy of the message `message_id`
        logged at `at_ms`, if the outbox has it (only a sent entry has one: another attempt
        of the same message may have been received)."""
        if not message_id:
            return None
        low, high = at_ms - OUTBOX_WINDOW_MS[0], at_ms + OUTBOX_WINDOW_MS[1]
        rows: Any = await self._client.xrevrange(self._outbox_key, str(high), str(low),
                                                 count=OUTBOX_SCANNED)
        for stream_id, fields in rows:
            value = fields.get(b"message_id", fields.get("message_id", b""))
            found = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if found == message_id:
                return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
        return None

    # --- the suppression list -----------------------------------------------------------------

    async def suppress(self, address: str, *, actor: str, reason: Reason = "manual",
                       note: str = "") -> bool:
        """Put `address` on the list (audited); False when it was on it already."""
        if reason not in REASONS:
            raise InvalidSearchError(f"reason must be one of {', '.join(REASONS)}")
        added = await self.suppressions.add(address, reason, by=actor, note=note)
        await self._audit(actor, "suppress", address.strip().lower(),
                          "ok" if added else "already", f"{reason}: {note}"[:200])
        return added

    async def remove_suppression(self, address: str, *, actor: str) -> Suppression | None:
        """Take `address` off the list (audited); the entry removed, or None."""
        removed = await self.suppressions.remove(address)
        await self._audit(actor, "unsuppress", address.strip().lower(),
                          "ok" if removed else "absent",
                          f"was {removed.reason}" if removed else "")
        return removed
