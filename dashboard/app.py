"""The dashboard application, built from data: one route table, middleware, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import ResponseError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard.live import event_stream, live
from dashboard.redis_full import redis_full_handler
from dashboard.render import ROOT
from dashboard.security import SecurityMiddleware, parse_credentials
from dashboard.views.events import api_events, events_page
from dashboard.views.flows import api_flow, flow_page
from dashboard.views.jobs import (
    api_job,
    job_data,
    job_duplicate,
    job_logs,
    job_page,
    job_promote,
    job_remove,
    job_retry,
    job_update_data,
)
from dashboard.views.metrics import health, metrics
from dashboard.views.outbox import (
    api_outbox,
    api_outbox_message,
    outbox_message_html,
    outbox_message_page,
    outbox_page,
)
from dashboard.views.queues import (
    api_queue,
    api_queue_jobs,
    api_queues,
    overview,
    queue_add_job,
    queue_clean,
    queue_drain,
    queue_obliterate,
    queue_page,
    queue_pause,
    queue_promote_delayed,
    queue_remove_selected,
    queue_resume,
    queue_retry_failed,
    queue_retry_selected,
    queues_pause_all,
    queues_resume_all,
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


def routes() -> list[Route | Mount]:
    """The one route table: every page, its JSON twin, every action."""
    return [
        Route("/", overview, name="overview"),
        Route("/api/queues", api_queues, name="api_queues"),
        Route("/queues/pause-all", queues_pause_all, methods=["POST"], name="queues_pause_all"),
        Route("/queues/resume-all", queues_resume_all, methods=["POST"],
              name="queues_resume_all"),
        Route("/api/queues/pause-all", queues_pause_all, methods=["POST"],
              name="api_queues_pause_all"),
        Route("/api/queues/resume-all", queues_resume_all, methods=["POST"],
              name="api_queues_resume_all"),
        Route("/queues/{name:queue}", queue_page, name="queue_page"),
        Route("/api/queues/{name:queue}", api_queue, name="api_queue"),
        Route("/api/queues/{name:queue}/jobs", api_queue_jobs, name="api_queue_jobs"),
        Route("/queues/{name:queue}/retry-failed", queue_retry_failed, methods=["POST"],
              name="queue_retry_failed"),
        Route("/api/queues/{name:queue}/retry-failed", queue_retry_failed, methods=["POST"],
              name="api_queue_retry_failed"),
        Route("/queues/{name:queue}/promote-delayed", queue_promote_delayed, methods=["POST"],
              name="queue_promote_delayed"),
        Route("/api/queues/{name:queue}/promote-delayed", queue_promote_delayed, methods=["POST"],
              name="api_queue_promote_delayed"),
        Route("/queues/{name:queue}/clean", queue_clean, methods=["POST"], name="queue_clean"),
        Route("/api/queues/{name:queue}/clean", queue_clean, methods=["POST"],
              name="api_queue_clean"),
        Route("/queues/{name:queue}/pause", queue_pause, methods=["POST"], name="queue_pause"),
        Route("/api/queues/{name:queue}/pause", queue_pause, methods=["POST"],
              name="api_queue_pause"),
        Route("/queues/{name:queue}/resume", queue_resume, methods=["POST"], name="queue_resume"),
        Route("/api/queues/{name:queue}/resume", queue_resume, methods=["POST"],
              name="api_queue_resume"),
        Route("/queues/{name:queue}/drain", queue_drain, methods=["POST"], name="queue_drain"),
        Route("/api/queues/{name:queue}/drain", queue_drain, methods=["POST"],
              name="api_queue_drain"),
        Route("/queues/{name:queue}/obliterate", queue_obliterate, methods=["POST"],
              name="queue_obliterate"),
        Route("/api/queues/{name:queue}/obliterate", queue_obliterate, methods=["POST"],
              name="api_queue_obliterate"),
        Route("/queues/{name:queue}/add-job", queue_add_job, methods=["POST"],
              name="queue_add_job"),
        Route("/api/queues/{name:queue}/add-job", queue_add_job, methods=["POST"],
              name="api_queue_add_job"),
        Route("/queues/{name:queue}/selected/retry", queue_retry_selected, methods=["POST"],
              name="queue_retry_selected"),
        Route("/api/queues/{name:queue}/selected/retry", queue_retry_selected, methods=["POST"],
              name="api_queue_retry_selected"),
        Route("/queues/{name:queue}/selected/remove", queue_remove_selected, methods=["POST"],
              name="queue_remove_selected"),
        Route("/api/queues/{name:queue}/selected/remove", queue_remove_selected, methods=["POST"],
              name="api_queue_remove_selected"),
        # One job: `{job_id:path}` (ids may hold '/'), so the suffix routes come first.
        Route("/queues/{name:queue}/jobs/{job_id:path}/flow", flow_page, name="flow_page"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}/flow", api_flow, name="api_flow"),
        Route("/queues/{name:queue}/jobs/{job_id:path}/data.json", job_data, name="job_data"),
        Route("/queues/{name:queue}/jobs/{job_id:path}/logs", job_logs, name="job_logs"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}/logs", job_logs, name="api_job_logs"),
        Route("/queues/{name:queue}/jobs/{job_id:path}/retry", job_retry, methods=["POST"],
              name="job_retry"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}/retry", job_retry, methods=["POST"],
              name="api_job_retry"),
        Route("/queues/{name:queue}/jobs/{job_id:path}/promote", job_promote, methods=["POST"],
              name="job_promote"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}/promote", job_promote, methods=["POST"],
              name="api_job_promote"),
        Route("/queues/{name:queue}/jobs/{job_id:path}/remove", job_remove, methods=["POST"],
              name="job_remove"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}/remove", job_remove, methods=["POST"],
              name="api_job_remove"),
        Route("/queues/{name:queue}/jobs/{job_id:path}/duplicate", job_duplicate, methods=["POST"],
              name="job_duplicate"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}/duplicate", job_duplicate,
              methods=["POST"], name="api_job_duplicate"),
        Route("/queues/{name:queue}/jobs/{job_id:path}/data", job_update_data, methods=["POST"],
              name="job_update_data"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}/data", job_update_data, methods=["POST"],
              name="api_job_update_data"),
        Route("/queues/{name:queue}/jobs/{job_id:path}", job_page, name="job_page"),
        Route("/api/queues/{name:queue}/jobs/{job_id:path}", api_job, name="api_job"),
        Route("/health", health, name="health"),
        Route("/metrics", metrics, name="metrics"),
        Route("/schedules", schedules_page, name="schedules_page"),
        Route("/api/schedules", api_schedules, name="api_schedules"),
        Route("/schedules/{queue:queue}/{scheduler_id:path}/run", schedule_run_now, methods=["POST"],
              name="schedule_run_now"),
        Route("/schedules/{queue:queue}/{scheduler_id:path}/remove", schedule_remove,
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
        # htmx alone is 51 KB; compressed, a first page load is ~30 KB. (GZipMiddleware
        # leaves text/event-stream alone, so live updates are not buffered.)
        Middleware(GZipMiddleware, minimum_size=1024),
    ]
    app = Starlette(routes=routes(), middleware=middleware, lifespan=lifespan)
    # Redis at maxmemory (an OOM reply to a write): a clear 503, not a 500.
    app.add_exception_handler(ResponseError, redis_full_handler)
    return app
