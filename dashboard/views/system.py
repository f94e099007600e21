"""System pages (schedules, workers and Redis, events, outbox, health and metrics).

Each page lives in its own module; this one names what other parts look up by path, such
as the live hub's `dashboard.views.system:live_events`.
"""

from __future__ import annotations

from ..views.events import live_events

__all__ = ["live_events"]
