"""What the events package shares: stream ids, parsing an events-stream entry, queue discovery.

BullMQ writes every job event to the Redis stream `<prefix>:<queue>:events`; these helpers are
used by the live reader (reader.py), the subscriptions' replays and the audit writer alike.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from mailqueue.job_options import validate_queue_name
from mailqueue.keys import Keys, queue_of_marker

Event = dict[str, Any]
EventCallback = Callable[[Event], Any]

_JSON_FIELDS = frozenset({"returnvalue", "data"})
_INT_FIELDS = frozenset({"delay", "attemptsMade", "count"})


def now_ms() -> float:
    return time.time() * 1000


def id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (ids compare as times, then sequence numbers)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def events_key(prefix: str, queue: str) -> str:
    return Keys(prefix, queue).events


def queue_of(prefix: str, key: str) -> str:
    """The queue name in an events-stream key (one this module read: always a queue's)."""
    return queue_of_marker(prefix, key) or ""


def parse_event(queue: str, entry_id: str, fields: dict[str, str]) -> Event:
    """One events-stream entry as the dict listeners receive; JSON fields decoded."""
    event: Event = {"id": entry_id, "queue": queue}
    for key, value in fields.items():
        if key in _JSON_FIELDS:
            with contextlib.suppress(ValueError, TypeError):
                event[key] = json.loads(value)
                continue
        elif key in _INT_FIELDS and value.lstrip("-").isdigit():
            event[key] = int(value)
            continue
        event[key] = value
    event.setdefault("event", "unknown")
    return event


def stream_entries(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """XREAD's reply as (key, entries) pairs, for RESP2 (list) and RESP3 (dict) alike."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply  # RESP3 gives a dict
    return [(key, entries) for key, entries in pairs]


async def scan_queues(conn: aioredis.Redis, prefix: str) -> set[str]:
    """Every queue of `prefix` that has an events stream (a SCAN over the keyspace)."""
    names = set()
    async for key in conn.scan_iter(match=f"{glob_escape(prefix)}:*:events", count=1000):
        name = queue_of_marker(prefix, key)  # None for a name with ':' (BullMQ forbids it)
        if name:
            names.add(name)
    return names


async def recent_events(
    client: aioredis.Redis, prefix: str, queues: list[str] | None, event_type: str | None,
    n: int,
) -> list[Event]:
    """The newest `n` events across `queues` (None: every queue), newest first.

    Reads each stream's tail with XREVRANGE (at most `n` entries per stream, or a bounded
    multiple of it when filtering by type), then merges by stream id.
    """
    if n <= 0:
        return []
    names = sorted({validate_queue_name(q) for q in queues} if queues
                   else await scan_queues(client, prefix))
    per_stream = n if event_type is None else min(n * 20, 10_000)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.xrevrange(events_key(prefix, name), "+", "-", count=per_stream)
    replies: list[Any] = await pipe.execute() if names else []
    events = [
        parse_event(name, entry_id, fields or {})
        for name, entries in zip(names, replies, strict=True)
        for entry_id, fields in entries
    ]
    if event_type:
        events = [e for e in events if e["event"] == event_type]
    events.sort(key=lambda e: id_key(e["id"]), reverse=True)
    return events[:n]
