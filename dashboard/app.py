"""The dashboard application, built from data: one route table, middleware, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mailqueue.manager import MailManager
from mailqueue.settings import Settings

from .errors import exception_handlers
from .live import event_stream, live
from .login_limit import LoginLimiter
from .origins import AllowedHosts
from .render import STATIC_DIR
from .security import SecurityMiddleware, parse_credentials
from .views.campaigns import (
    api_campaign,
    api_campaigns,
    campaign_cancel,
    campaign_create,
    campaign_page,
    campaign_pause,
    campaign_resume,
    campaigns_page,
)
from .views.events import api_events, events_page
from .views.find import api_find_job, find_job
from .views.flows import api_flow, flow_page
from .views.job_actions import (
    job_duplicate,
    job_promote,
    job_remove,
    job_retry,
    job_update_data,
)
from .views.jobs import api_job, job_data, job_logs, job_page
from .views.messages import (
    api_job_messages,
    api_message_entry,
    api_messages,
    job_messages,
    message_entry_page,
    messages_page,
)
from .views.metrics import health, metrics
from .views.outbox import (
    api_outbox,
    api_outbox_message,
    outbox_message_html,
    outbox_message_page,
    outbox_page,
)
from .views.overview import api_queues, overview
from .views.queue_actions import (
    queue_add_job,
    queue_clean,
    queue_drain,
    queue_obliterate,
    queue_pause,
    queue_promote_delayed,
    queue_remove_selected,
    queue_resume,
    queue_retry_failed,
    queue_retry_selected,
    queues_pause_all,
    queues_resume_all,
)
from .views.queue_controls import (
    api_queue_latest,
    api_queue_limits,
    job_change_delay,
    job_change_priority,
    queue_latest,
    queue_limits_line,
    queue_release_concurrency,
    queue_release_rate_limit,
    queue_set_concurrency,
    queue_set_rate_limit,
    schedule_preview,
    schedule_update,
)
from .views.queues import api_queue, api_queue_jobs, queue_page
from .views.schedules import (
    api_schedules,
    schedule_remove,
    schedule_run_now,
    schedules_page,
)
from .views.suppressions import (
    api_suppressions,
    suppression_add,
    suppression_remove,
    suppressions_page,
)
from .views.templates_page import (
    api_template,
    api_templates,
    template_page,
    template_preview,
    template_preview_html,
    template_send_test,
    templates_page,
)
from .views.workers import api_workers, workers_page


def page(path: str, view: Callable[..., Any], api_view: Callable[..., Any]) -> list[Route]:
    """A page and its JSON twin at /api<path>, each route named after its view."""
    return [Route(path, view, name=view.__name__),
            Route(f"/api{path}", api_view, name=api_view.__name__)]


def actions(base: str, endpoints: Mapping[str, Callable[..., Any]]) -> list[Route]:
    """Operator actions: each `base/<suffix>` (POST) and its JSON twin under /api/, one
    handler answering both, the routes named after it (`queue_clean`, `api_queue_clean`)."""
    return [Route(f"{prefix}{base}/{suffix}", endpoint, methods=["POST"],
                  name=f"{twin}{endpoint.__name__}")
            for suffix, endpoint in endpoints.items()
            for prefix, twin in (("", ""), ("/api", "api_"))]


def routes() -> list[Route | Mount]:
    """The one route table: every page, its JSON twin, every action."""
    queue = "/queues/{name:queue}"
    # `{job_id:path}`: ids may hold '/', so a job's suffix routes come before its page.
    job = "/queues/{name:queue}/jobs/{job_id:path}"
    schedule = "/schedules/{queue:queue}/{scheduler_id:path}"
    return [
        Route("/", overview, name="overview"),
        Route("/api/queues", api_queues, name="api_queues"),
        *page("/jobs/find", find_job, api_find_job),
        *actions("/queues", {
            "pause-all": queues_pause_all,
            "resume-all": queues_resume_all,
        }),
        *page(queue, queue_page, api_queue),
        Route(f"/api{queue}/jobs", api_queue_jobs, name="api_queue_jobs"),
        *actions(queue, {
            "retry-failed": queue_retry_failed,
            "promote-delayed": queue_promote_delayed,
            "clean": queue_clean,
            "pause": queue_pause,
            "resume": queue_resume,
            "drain": queue_drain,
            "obliterate": queue_obliterate,
            "add-job": queue_add_job,
            "selected/retry": queue_retry_selected,
            "selected/remove": queue_remove_selected,
            "concurrency": queue_set_concurrency,
            "concurrency/release": queue_release_concurrency,
            "rate-limit": queue_set_rate_limit,
            "rate-limit/release": queue_release_rate_limit,
        }),
        *page(f"{queue}/latest", queue_latest, api_queue_latest),
        Route(f"/api{queue}/limits", api_queue_limits, name="api_queue_limits"),
        Route(f"{queue}/limits-line", queue_limits_line, name="queue_limits_line"),
        *page(f"{job}/flow", flow_page, api_flow),
        Route(f"{job}/data.json", job_data, name="job_data"),
        Route(f"{job}/logs", job_logs, name="job_logs"),
        *page(f"{job}/messages", job_messages, api_job_messages),
        Route(f"/api{job}/logs", job_logs, name="api_job_logs"),
        *actions(job, {
            "retry": job_retry,
            "promote": job_promote,
            "remove": job_remove,
            "duplicate": job_duplicate,
            "data": job_update_data,
            "delay": job_change_delay,
            "priority": job_change_priority,
        }),
        *page(job, job_page, api_job),
        Route("/health", health, name="health"),
        Route("/metrics", metrics, name="metrics"),
        *page("/schedules", schedules_page, api_schedules),
        Route("/schedules/preview", schedule_preview, name="schedule_preview"),
        Route("/api/schedules/preview", schedule_preview, name="api_schedule_preview"),
        *actions(schedule, {
            "update": schedule_update,
            "run": schedule_run_now,
            "remove": schedule_remove,
        }),
        *page("/workers", workers_page, api_workers),
        *page("/events", events_page, api_events),
        *page("/outbox", outbox_page, api_outbox),
        Route("/outbox/{message_id}", outbox_message_page, name="outbox_message_page"),
        Route("/outbox/{message_id}/html", outbox_message_html, name="outbox_message_html"),
        Route("/api/outbox/{message_id}", api_outbox_message, name="api_outbox_message"),
        *page("/messages", messages_page, api_messages),
        *page("/messages/{entry_id}", message_entry_page, api_message_entry),
        Route("/suppressions", suppressions_page, name="suppressions_page"),
        Route("/suppressions", suppression_add, methods=["POST"], name="suppression_add"),
        Route("/api/suppressions", api_suppressions, name="api_suppressions"),
        Route("/api/suppressions", suppression_add, methods=["POST"],
              name="api_suppression_add"),
        Route("/suppressions/remove", suppression_remove, methods=["POST"],
              name="suppression_remove"),
        Route("/api/suppressions/{address:path}", suppression_remove, methods=["DELETE"],
              name="api_suppression_remove"),
        *page("/campaigns", campaigns_page, api_campaigns),
        Route("/campaigns", campaign_create, methods=["POST"], name="campaign_create"),
        Route("/api/campaigns", campaign_create, methods=["POST"], name="api_campaign_create"),
        *page("/campaigns/{campaign_id}", campaign_page, api_campaign),
        *actions("/campaigns/{campaign_id}", {
            "pause": campaign_pause,
            "resume": campaign_resume,
            "cancel": campaign_cancel,
        }),
        *page("/templates", templates_page, api_templates),
        *page("/templates/{name}", template_page, api_template),
        Route("/templates/{name}/preview", template_preview, name="template_preview"),
        Route("/templates/{name}/preview.html", template_preview_html,
              name="template_preview_html"),
        *actions("/templates/{name}", {
            "send-test": template_send_test,
        }),
        Route("/live", live, name="live"),
        Route("/api/events/stream", event_stream, name="api_event_stream"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
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
                   read_only=settings.dashboard_read_only,
                   allowed_hosts=AllowedHosts.from_setting(settings.dashboard_allowed_hosts,
                                                           bound=settings.dashboard_host),
                   login_limiter=LoginLimiter()),
        # htmx alone is 51 KB; compressed, a first page load is ~30 KB. (GZipMiddleware
        # leaves text/event-stream alone, so live updates are not buffered.)
        Middleware(GZipMiddleware, minimum_size=1024),
    ]
    # Domain errors, Redis away and Redis full: answered in one place (dashboard/errors.py).
    return Starlette(routes=routes(), middleware=middleware, lifespan=lifespan,
                     exception_handlers=dict(exception_handlers()))
