"""The dashboard application, built from data: one route table, middleware, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard.live import event_stream, live
from dashboard.render import ROOT, render
from dashboard.security import SecurityMiddleware, parse_credentials
from dashboard.views.events import api_events, events_page
from dashboard.views.metrics import health, metrics
from dashboard.views.outbox import (
    api_outbox,
    api_outbox_message,
    outbox_message_html,
    outbox_message_page,
    outbox_page,
)
from dashboard.views.schedules import (
    api_schedules,
    schedule_remove,
    schedule_run_now,
    schedules_page,
)
from dashboard.views.workers import api_workers, workers_page
from mailqueue.manager import MailManager
from mailqueue.settings import Settings

# Every state column of the overview, in reading order.
OVERVIEW_STATES = ("waiting", "active", "delayed", "prioritized", "waiting-children",
                   "completed", "failed")


def _mail(request: Request) -> MailManager:
    manager: MailManager = request.app.state.mail
    return manager


async def _overview_rows(mail: MailManager) -> list[dict[str, Any]]:
    metrics = await mail.get_all_queue_metrics()
    return [
        {"name": name, "counts": m["counts"], "paused": m["paused"]}
        for name, m in metrics.items()
    ]


async def overview(request: Request) -> Response:
    rows = await _overview_rows(_mail(request))
    return render(request, "pages/overview.html", {"queues": rows, "states": OVERVIEW_STATES})


async def api_queues(request: Request) -> Response:
    return JSONResponse({"queues": await _overview_rows(_mail(request))})


def routes() -> list[Route | Mount]:
    """The one route table: every page, its JSON twin, every action."""
    return [
        Route("/", overview, name="overview"),
        Route("/api/queues", api_queues, name="api_queues"),
        Route("/health", health, name="health"),
        Route("/metrics", metrics, name="metrics"),
        Route("/schedules", schedules_page, name="schedules_page"),
        Route("/api/schedules", api_schedules, name="api_schedules"),
        Route("/schedules/{queue}/{scheduler_id:path}/run", schedule_run_now, methods=["POST"],
              name="schedule_run_now"),
        Route("/schedules/{queue}/{scheduler_id:path}/remove", schedule_remove,
              methods=["POST"], name="schedule_remove"),
        Route("/workers", workers_page, name="workers_page"),
        Route("/api/workers", api_workers, name="api_workers"),
        Route("/events", events_page, name="events_page"),
        Route("/api/events", api_events, name="api_events"),
        Route("/outbox", outbox_page, name="outbox_page"),
        Route("/api/outbox", api_outbox, name="api_outbox"),
        Route("/outbox/{message_id}", outbox_message_page, name="outbox_message_page"),
        Route("/outbox/{message_id}/html", outbox_message_html, name="outbox_message_html"),
        Route("/api/outbox/{message_id}", api_outbox_message, name="api_outbox_message"),
        Route("/live", live, name="live"),
        Route("/api/events/stream", event_stream, name="api_event_stream"),
        Mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static"),
    ]


def create_app(settings: Settings | None = None, mail: MailManager | None = None) -> Starlette:
    """The dashboard app. Given a started MailManager it shares it; else it owns one."""
    settings = settings or (mail.settings if mail else Settings())
    credentials = parse_credentials(settings.dashboard_auth, can_write=True)
    credentials += parse_credentials(settings.dashboard_viewer_auth, can_write=False)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.live_hub = None
        try:
            if mail is not None:
                app.state.mail = mail
                yield
                return
            async with MailManager(settings) as owned:
                app.state.mail = owned
                yield
        finally:
            if app.state.live_hub is not None:
                await app.state.live_hub.close()

    middleware = [
        Middleware(SecurityMiddleware, credentials=credentials,
                   read_only=settings.dashboard_read_only),
    ]
    return Starlette(routes=routes(), middleware=middleware, lifespan=lifespan)
