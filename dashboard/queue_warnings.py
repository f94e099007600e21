"""Warnings that stand out on the overview and the queue page: a queue that will not move.

- `no-worker`: jobs wait (or are prioritized) and no worker of any language is connected to
  the queue; nothing will run them. Not said of a paused queue: its badge says why.
- `rate-limited`: BullMQ's rate limit holds the queue (mailqueue.queues.alerts).
- `schedule-overdue`: a job scheduler's next run is more than a minute in the past.

Each warning is data (kind, numbers); templates/partials/_warnings.html words it, so relative
times in it stay true on a live page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def queue_warnings(counts: Mapping[str, int], workers: int, paused: bool,
                   alerts: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    warnings: list[dict[str, Any]] = []
    waiting = counts.get("waiting", 0) + counts.get("prioritized", 0)
    if waiting and not workers and not paused:
        warnings.append({"kind": "no-worker", "label": "no worker", "waiting": waiting})
    alerts = alerts or {}
    if alerts.get("rate_limit"):
        warnings.append({"kind": "rate-limited", "label": "rate-limited",
                         **alerts["rate_limit"]})
    if alerts.get("overdue_schedules"):
        warnings.append({"kind": "schedule-overdue", "label": "schedule overdue",
                         **alerts["overdue_schedules"]})
    return warnings


def as_json(warnings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The warnings as the JSON twins give them: kind and numbers, no wording."""
    return [{k: v for k, v in w.items() if k != "label"} for w in warnings]
