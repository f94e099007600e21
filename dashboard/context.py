"""The context every full page shares: the sidebar of queues and the current section.

The sidebar is live on every page: the page's SSE stream (dashboard/live.py) sends it as
the `sidebar` event, rendered by `live_sidebar` from the same partial the page includes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict
from urllib.parse import urlencode

from starlette.requests import Request

from mailqueue.manager import MailManager

from .render import render_fragment

SIDEBAR_TEMPLATE = "partials/_sidebar.html"


def mail_of(request: Request) -> MailManager:
    """The app's manager: every view reaches the manager layer through it."""
    manager: MailManager = request.app.state.mail
    return manager


SIDEBAR_MAX = 40  # queues listed in the sidebar; past that, the overview pages through all


class SidebarQueue(TypedDict):
    name: str
    waiting: int
    failed: int


async def sidebar_queues(mail: MailManager, current_queue: str | None = None
                         ) -> tuple[list[SidebarQueue], int]:
    """The queues the sidebar lists, with their waiting and failed counts, and how many it
    leaves out. With more than `SIDEBAR_MAX` (a Redis of one queue per tenant), it lists the
    ones that need a look — most failed, then most waiting — and the page's own queue, in
    name order; the overview lists them all."""
    names = await mail.queues.list_queues()
    counts = await mail.queues.get_many_job_counts(names)  # one round trip for all
    rows: list[SidebarQueue] = [
        # A paused queue's waiting jobs are counted as `paused` by BullMQ: still waiting.
        {"name": name, "waiting": counts[name]["counts"].get("waiting", 0)
         + counts[name]["counts"].get("paused", 0),
         "failed": counts[name]["counts"].get("failed", 0)}
        for name in names
    ]
    if len(rows) <= SIDEBAR_MAX:
        return rows, 0
    ranked = sorted(rows, key=lambda r: (-r["failed"], -r["waiting"], r["name"]))
    shown = [r for r in ranked if r["name"] == current_queue]
    shown += [r for r in ranked if r["name"] != current_queue][:SIDEBAR_MAX - len(shown)]
    return sorted(shown, key=lambda r: r["name"]), len(rows) - len(shown)


def live_url(request: Request, query: Mapping[str, Any]) -> str:
    """A page's live stream: `/live?view=<view>&...` (the page's `live_url`)."""
    return f"{request.app.url_path_for('live')}?{urlencode(query)}"


def sidebar_live_url(request: Request, current_queue: str | None) -> str:
    """The live stream of a page with no live region but the sidebar."""
    return live_url(request, {"view": "sidebar",
                              **({"queue": current_queue} if current_queue else {})})


async def page_context(request: Request, section: str, current_queue: str | None = None
                       ) -> dict[str, Any]:
    """Sidebar queues with their waiting and failed counts, and the section for the nav.

    A page with live regions sets `live_url` (its `/live?view=...`); without one, base.html
    connects to `sidebar_live_url`, so the sidebar stays live on every page.
    """
    return {
        "section": section,
        "current_queue": current_queue,
        **_sidebar(*await sidebar_queues(mail_of(request), current_queue)),
        "sidebar_live_url": sidebar_live_url(request, current_queue),
    }


async def live_sidebar(request: Request, params: Mapping[str, str]) -> dict[str, str]:
    """The sidebar, as the `sidebar` SSE event (`params["queue"]`: the page's queue)."""
    current_queue = params.get("queue") or None
    context = {**_sidebar(*await sidebar_queues(mail_of(request), current_queue)),
               "current_queue": current_queue}
    return {"sidebar": render_fragment(request, SIDEBAR_TEMPLATE, context)}


def _sidebar(queues: list[SidebarQueue], more: int) -> dict[str, Any]:
    return {"sidebar_queues": queues, "sidebar_more": more}


async def no_live_regions(request: Request, params: Mapping[str, str]) -> dict[str, str]:
    """The live view of a page whose only live region is the sidebar (sent with every
    view by the stream itself)."""
    return {}
