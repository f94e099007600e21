"""What the events reader (reader.py) has seen since start: counts per queue and type, lag.

`EventStats` is what `EventManager.get_event_stats()` answers (the dashboard's /metrics
reads it): these counts with the reader's connection and who listens.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, TypedDict

from mailqueue.events.streams import Event, id_key, now_ms


class LagMs(TypedDict):
    """How far behind Redis's clock the reader got events: the last, the most, the mean."""

    last: float
    max: float
    avg: float


class EventStats(TypedDict):
    """Events seen since start, the reader's connection, and who listens."""

    started_at: float
    total: int
    per_queue: dict[str, int]
    per_type: dict[str, int]
    per_queue_type: dict[str, dict[str, int]]
    last_event_at: float | None
    last_event_id: str | None
    lag_ms: LagMs
    connected: bool
    reconnects: int
    last_error: str | None
    watched_queues: list[str]
    listeners: int
    subscribers: int
    audit_writer: dict[str, Any] | None


class EventCounts:
    """Events counted as the reader dispatches them."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.total = 0
        self._per_queue_type: dict[str, Counter[str]] = {}
        self.last_event_at: float | None = None
        self.last_event_id: str | None = None
        self._lag_last = self._lag_max = self._lag_sum = 0.0

    def count(self, event: Event, clock_offset_ms: float | None) -> None:
        now = now_ms()
        lag = max(0.0, now + (clock_offset_ms or 0.0) - id_key(event["id"])[0])
        self.total += 1
        self._per_queue_type.setdefault(event["queue"], Counter())[event["event"]] += 1
        self.last_event_at = now / 1000
        self.last_event_id = event["id"]
        self._lag_last = lag
        self._lag_max = max(self._lag_max, lag)
        self._lag_sum += lag

    def per_queue_type(self) -> dict[str, dict[str, int]]:
        return {q: dict(c) for q, c in sorted(self._per_queue_type.items())}

    def per_type(self) -> dict[str, int]:
        per_type: Counter[str] = Counter()
        for counts in self._per_queue_type.values():
            per_type.update(counts)
        return dict(sorted(per_type.items()))

    def lag_ms(self) -> LagMs:
        return LagMs(last=round(self._lag_last, 1), max=round(self._lag_max, 1),
                     avg=round(self._lag_sum / self.total, 1) if self.total else 0.0)
