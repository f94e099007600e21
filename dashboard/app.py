"""The dashboard application, built from data: routes, templates, lifespan.

Issue 4 grows this into the full dashboard; for now it lists every queue with its counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from mailqueue.manager import MailManager
from mailqueue.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(ROOT / "templates"))

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
    return templates.TemplateResponse(
        request, "pages/overview.html", {"queues": rows, "states": OVERVIEW_STATES}
    )


async def api_queues(request: Request) -> Response:
    return JSONResponse({"queues": await _overview_rows(_mail(request))})


async def health(request: Request) -> Response:
    report = await _mail(request).health_check()
    return JSONResponse(report, status_code=200 if report["healthy"] else 503)


def create_app(settings: Settings | None = None, mail: MailManager | None = None) -> Starlette:
    """The dashboard app. Given a started MailManager it shares it; else it owns one."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if mail is not None:
            app.state.mail = mail
            yield
            return
        async with MailManager(settings) as owned:
            app.state.mail = owned
            yield

    routes = [
        Route("/", overview, name="overview"),
        Route("/api/queues", api_queues, name="api_queues"),
        Route("/health", health, name="health"),
        Mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
