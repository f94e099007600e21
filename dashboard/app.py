"""The dashboard application, built from data: one route table, middleware, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mailqueue.cluster import redis_error_reason
from mailqueue.errors import RedisUnavailableError
from mailqueue.manager import MailManager
from mailqueue.redact import redact_url
from mailqueue.settings import Settings

from .live import event_stream, live
from .login_limit import LoginLimiter
from .origins import AllowedHosts
from .redis_full import redis_full_handler
from .render import STATIC_DIR, is_htmx, render, render_fragment
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
from .views.jobs import (
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

# Redis gone (killed, restarting, loading its AOF, unreachable): what any view may raise.
# redis-py's ConnectionError covers BusyLoadingError; the builtin covers raw socket errors.
REDIS_DOWN_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, RedisUnavailableError, ConnectionError,
)
REDIS_RETRY_AFTER_S = 5


def action(path: str, endpoint: Callable[..., Any], name: str) -> list[Route]:
    """An operator action (POST) and its JSON twin under /api/; one handler answers both."""
    return [Route(path, endpoint, methods=["POST"], name=name),
            Route(f"/api{path}", endpoint, methods=["POST"], name=f"api_{name}")]


def routes() -> list[Route | Mount]:
    """The one route table: every page, its JSON twin, every action."""
    queue = "/queues/{name:queue}"
    # `{job_id:path}`: ids may hold '/', so a job's suffix routes come before its page.
    job = "/queues/{name:queue}/jobs/{job_id:path}"
    schedule = "/schedules/{queue:queue}/{scheduler_id:path}"
    return [
        Route("/", overview, name="overview"),
        Route("/api/queues", api_queues, name="api_queues"),
        Route("/jobs/find", find_job, name="find_job"),
        Route("/api/jobs/find", api_find_job, name="api_find_job"),
        *action("/queues/pause-all", queues_pause_all, "queues_pause_all"),
        *action("/queues/resume-all", queues_resume_all, "queues_resume_all"),
        Route(queue, queue_page, name="queue_page"),
        Route(f"/api{queue}", api_queue, name="api_queue"),
        Route(f"/api{queue}/jobs", api_queue_jobs, name="api_queue_jobs"),
        *action(f"{queue}/retry-failed", queue_retry_failed, "queue_retry_failed"),
        *action(f"{queue}/promote-delayed", queue_promote_delayed, "queue_promote_delayed"),
        *action(f"{queue}/clean", queue_clean, "queue_clean"),
        *action(f"{queue}/pause", queue_pause, "queue_pause"),
        *action(f"{queue}/resume", queue_resume, "queue_resume"),
        *action(f"{queue}/drain", queue_drain, "queue_drain"),
        *action(f"{queue}/obliterate", queue_obliterate, "queue_obliterate"),
        *action(f"{queue}/add-job", queue_add_job, "queue_add_job"),
        *action(f"{queue}/selected/retry", queue_retry_selected, "queue_retry_selected"),
        *action(f"{queue}/selected/remove", queue_remove_selected, "queue_remove_selected"),
        Route(f"{queue}/latest", queue_latest, name="queue_latest"),
        Route(f"/api{queue}/latest", api_queue_latest, name="api_queue_latest"),
        Route(f"/api{queue}/limits", api_queue_limits, name="api_queue_limits"),
        Route(f"{queue}/limits-line", queue_limits_line, name="queue_limits_line"),
        *action(f"{queue}/concurrency", queue_set_concurrency, "queue_set_concurrency"),
        *action(f"{queue}/concurrency/release", queue_release_concurrency,
                "queue_release_concurrency"),
        *action(f"{queue}/rate-limit", queue_set_rate_limit, "queue_set_rate_limit"),
        *action(f"{queue}/rate-limit/release", queue_release_rate_limit,
                "queue_release_rate_limit"),
        Route(f"{job}/flow", flow_page, name="flow_page"),
        Route(f"/api{job}/flow", api_flow, name="api_flow"),
        Route(f"{job}/data.json", job_data, name="job_data"),
        Route(f"{job}/logs", job_logs, name="job_logs"),
        Route(f"{job}/messages", job_messages, name="job_messages"),
        Route(f"/api{job}/messages", api_job_messages, name="api_job_messages"),
        Route(f"/api{job}/logs", job_logs, name="api_job_logs"),
        *action(f"{job}/retry", job_retry, "job_retry"),
        *action(f"{job}/promote", job_promote, "job_promote"),
        *action(f"{job}/remove", job_remove, "job_remove"),
        *action(f"{job}/duplicate", job_duplicate, "job_duplicate"),
        *action(f"{job}/data", job_update_data, "job_update_data"),
        *action(f"{job}/delay", job_change_delay, "job_change_delay"),
        *action(f"{job}/priority", job_change_priority, "job_change_priority"),
        Route(job, job_page, name="job_page"),
        Route(f"/api{job}", api_job, name="api_job"),
        Route("/health", health, name="health"),
        Route("/metrics", metrics, name="metrics"),
        Route("/schedules", schedules_page, name="schedules_page"),
        Route("/api/schedules", api_schedules, name="api_schedules"),
        Route("/schedules/preview", schedule_preview, name="schedule_preview"),
        Route("/api/schedules/preview", schedule_preview, name="api_schedule_preview"),
        *action(f"{schedule}/update", schedule_update, "schedule_update"),
        *action(f"{schedule}/run", schedule_run_now, "schedule_run_now"),
        *action(f"{schedule}/remove", schedule_remove, "schedule_remove"),
        Route("/workers", workers_page, name="workers_page"),
        Route("/api/workers", api_workers, name="api_workers"),
        Route("/events", events_page, name="events_page"),
        Route("/api/events", api_events, name="api_events"),
        Route("/outbox", outbox_page, name="outbox_page"),
        Route("/api/outbox", api_outbox, name="api_outbox"),
        Route("/outbox/{message_id}", outbox_message_page, name="outbox_message_page"),
        Route("/outbox/{message_id}/html", outbox_message_html, name="outbox_message_html"),
        Route("/api/outbox/{message_id}", api_outbox_message, name="api_outbox_message"),
        Route("/messages", messages_page, name="messages_page"),
        Route("/api/messages", api_messages, name="api_messages"),
        Route("/messages/{entry_id}", message_entry_page, name="message_entry_page"),
        Route("/api/messages/{entry_id}", api_message_entry, name="api_message_entry"),
        Route("/suppressions", suppressions_page, name="suppressions_page"),
        Route("/suppressions", suppression_add, methods=["POST"], name="suppression_add"),
        Route("/api/suppressions", api_suppressions, name="api_suppressions"),
        Route("/api/suppressions", suppression_add, methods=["POST"],
              name="api_suppression_add"),
        Route("/suppressions/remove", suppression_remove, methods=["POST"],
              name="suppression_remove"),
        Route("/api/suppressions/{address:path}", suppression_remove, methods=["DELETE"],
              name="api_suppression_remove"),
        Route("/campaigns", campaigns_page, name="campaigns_page"),
        Route("/api/campaigns", api_campaigns, name="api_campaigns"),
        Route("/campaigns", campaign_create, methods=["POST"], name="campaign_create"),
        Route("/api/campaigns", campaign_create, methods=["POST"], name="api_campaign_create"),
        Route("/campaigns/{campaign_id}", campaign_page, name="campaign_page"),
        Route("/api/campaigns/{campaign_id}", api_campaign, name="api_campaign"),
        *action("/campaigns/{campaign_id}/pause", campaign_pause, "campaign_pause"),
        *action("/campaigns/{campaign_id}/resume", campaign_resume, "campaign_resume"),
        *action("/campaigns/{campaign_id}/cancel", campaign_cancel, "campaign_cancel"),
        Route("/templates", templates_page, name="templates_page"),
        Route("/api/templates", api_templates, name="api_templates"),
        Route("/templates/{name}", template_page, name="template_page"),
        Route("/api/templates/{name}", api_template, name="api_template"),
        Route("/templates/{name}/preview", template_preview, name="template_preview"),
        Route("/templates/{name}/preview.html", template_preview_html,
              name="template_preview_html"),
        *action("/templates/{name}/send-test", template_send_test, "template_send_test"),
        Route("/live", live, name="live"),
        Route("/api/events/stream", event_stream, name="api_event_stream"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


async def redis_unavailable(request: Request, exc: Exception) -> Response:
    """503 while Redis is away, never a traceback: a page with a banner (reloading by
    itself), the banner alone for an htmx request, JSON for /api/ and /health. The next
    request after Redis is back reconnects: nothing to restart."""
    reason = redact_url(" ".join(str(exc).split())) or type(exc).__name__
    mail = getattr(request.app.state, "mail", None)
    if isinstance(exc, RedisTimeoutError) and mail is not None:
        # A stalled Redis (REDIS_COMMAND_TIMEOUT_S ran out): say that, not "Timeout reading".
        reason = redis_error_reason(exc, mail.settings.redis_command_timeout_s)
    headers = {"Retry-After": str(REDIS_RETRY_AFTER_S), "Cache-Control": "no-store"}
    path = request.url.path
    if path.startswith("/api/") or path in ("/health", "/metrics"):
        return JSONResponse(
            {"healthy": False, "error": "redis_unavailable",
             "message": f"Redis is unavailable: {reason}"},
            status_code=503, headers=headers,
        )
    context = {"redis_error": reason, "retry_after": REDIS_RETRY_AFTER_S}
    if is_htmx(request):
        html = render_fragment(request, "partials/_redis_unavailable.html", context)
        # Into the page's banner, whatever the request was going to swap.
        headers.update({"HX-Retarget": "#banner", "HX-Reswap": "outerHTML"})
        return HTMLResponse(html, status_code=503, headers=headers)
    target = getattr(mail, "redis", None)
    context["redis_url"] = redact_url(target.url) if target is not None else "(unknown)"
    response = render(request, "pages/redis_unavailable.html", context, status_code=503)
    response.headers.update(headers)
    return response


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
    app = Starlette(routes=routes(), middleware=middleware, lifespan=lifespan)
    # Redis at maxmemory (an OOM reply to a write): a clear 503, not a 500.
    app.add_exception_handler(ResponseError, redis_full_handler)
    # Redis away (killed, restarting, unreachable): a 503 with a banner, not a traceback.
    for error in REDIS_DOWN_ERRORS:
        app.add_exception_handler(error, redis_unavailable)
    return app
