"""The events page: the recent event stream across queues, the audit log, recent alerts.

The stream region is live: `live_events` renders the same partial the page includes, and
the SSE hub (dashboard/live.py) pushes it when events arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager

from ..context import live_url, mail_of, page_context
from ..formatting import ago, timestamp
from ..render import render, render_fragment

# The event types BullMQ writes, for the filter (any other type typed in works too).
EVENT_TYPES = ("added", "waiting", "active", "progress", "completed", "failed", "delayed",
               "stalled", "retries-exhausted", "removed", "cleaned", "drained", "paused",
               "resumed", "waiting-children", "duplicated", "deduplicated", "debounced")
RECENT_EVENTS = 100
AUDIT_ENTRIES = 50
ALERTS = 20
_MAX_FILTER = 200


def event_filters(params: Mapping[str, str]) -> dict[str, str]:
    """The page's filter: queue and event type, empty meaning all."""
    return {"queue": params.get("queue", "").strip()[:_MAX_FILTER],
            "type": params.get("type", "").strip()[:_MAX_FILTER]}


async def recent_events(mail: MailManager, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    queue = filters.get("queue") or None
    try:
        return await mail.events.recent_events(
            [queue] if queue else None, filters.get("type") or None, RECENT_EVENTS
        )
    except MailQueueError:  # a queue name BullMQ would refuse: nothing to show
        return []


def event_summary(event: Mapping[str, Any]) -> str:
    """The one field that says most about an event, as a short text."""
    if event.get("event") == "delayed":
        runs_at = delayed_until(event.get("delay"))
        if runs_at is not None:
            return f"runs at {timestamp(runs_at)} ({ago(runs_at)})"
    for key in ("failedReason", "returnvalue", "data", "prev", "delay", "count"):
        if event.get(key) not in (None, ""):
            value = event[key]
            text = value if isinstance(value, str) else _json(value)
            return f"{key}: {text}"[:300]
    return ""


# Epoch milliseconds after 2001: BullMQ's `delayed` event gives the time the job will run,
# not a span (old Bull gave a span; that stays a plain `delay:` field).
_EPOCH_MS_FLOOR = 10**12


def delayed_until(value: Any) -> int | None:
    """The run time a `delayed` event's `delay` field holds, in epoch ms, if it is one."""
    try:
        ms = int(str(value))
    except ValueError:
        return None
    return ms if ms >= _EPOCH_MS_FLOOR else None


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str, ensure_ascii=False)


def _event_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "time_ms": int(str(e["id"]).partition("-")[0] or 0),
             "summary": event_summary(e)} for e in events]


class EventsData(TypedDict):
    """What the events page shows: recent events, the audit log, the alerts, the filters."""

    events: list[dict[str, Any]]
    audit: list[Any]
    alerts: list[Any]
    queues: list[str]
    event_types: tuple[str, ...]
    filters: dict[str, str]


async def events_data(mail: MailManager, filters: Mapping[str, str]) -> EventsData:
    events, audit, alerts, queues = await asyncio.gather(
        recent_events(mail, filters), mail.get_audit_log(AUDIT_ENTRIES),
        mail.events.get_alerts(ALERTS), mail.queues.list_queues(),
    )
    return {"events": _event_rows(events), "audit": audit, "alerts": alerts,
            "queues": queues, "event_types": EVENT_TYPES, "filters": dict(filters)}


async def events_page(request: Request) -> Response:
    filters = event_filters(request.query_params)
    context = await page_context(request, "events_page", filters["queue"] or None)
    context.update(await events_data(mail_of(request), filters))
    context["live_url"] = live_url(request, {"view": "events", **filters})
    return render(request, "pages/events.html", context,
                  fragment="partials/_events_stream.html")


async def api_events(request: Request) -> Response:
    data = await events_data(mail_of(request), event_filters(request.query_params))
    for event in data["events"]:
        event.pop("time_ms", None)
    return JSONResponse({k: data[k] for k in ("filters", "events", "audit", "alerts")})


async def live_events(request: Request, params: Mapping[str, str]) -> dict[str, str]:
    """The events page's live regions (SSE event name -> rendered partial)."""
    filters = event_filters(params)
    data = await events_data(mail_of(request), filters)
    return {
        "events": render_fragment(request, "partials/_events_stream.html", data),
        "audit": render_fragment(request, "partials/_events_audit.html", data),
        "alerts": render_fragment(request, "partials/_events_alerts.html", data),
    }
