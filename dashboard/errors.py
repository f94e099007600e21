"""The one place a failure becomes an HTTP answer: the app's exception handlers.

Views call the manager layer and let its errors rise: a queue or job that is not there, a
search or a schedule of the wrong form, a job in the wrong state, a query parameter the
page cannot use (`BadParameterError`). `status_of` says the status of each; `domain_error`
answers it, as JSON `{"error": ...}` for /api/ (and JSON) requests, else as the error page.
Operator actions answer their refusals themselves (they audit them; dashboard/actions.py),
with the same `status_of`.

Redis away (killed, restarting, stalled) is a 503 with Retry-After, a banner that reloads by
itself; Redis full (an OOM reply to a write) a 503 that says how full it is. This module
alone knows redis-py's exception classes: the rest of the web layer names them `REDIS_TROUBLE`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypedDict

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from mailqueue.cluster import redis_error_reason
from mailqueue.desk import InvalidSearchError
from mailqueue.errors import (
    JobNotFoundError,
    JobStateError,
    MailQueueError,
    RedisUnavailableError,
    UnknownQueueError,
)
from mailqueue.redact import redact_url
from mailqueue.redis_memory import is_redis_full

from .context import mail_of, page_context
from .render import is_htmx, path_for, render, render_fragment, wants_json

ERROR_PAGE = "pages/error.html"
REDIS_RETRY_AFTER_S = 5
REDIS_FULL_RETRY_AFTER_S = 60

# Redis gone (killed, restarting, loading its AOF, unreachable): what any view may raise.
# redis-py's ConnectionError covers BusyLoadingError; the builtin covers raw socket errors.
REDIS_DOWN_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, RedisUnavailableError, ConnectionError,
)


class BadParameterError(ValueError):
    """A query parameter the page cannot use; answered with 422 and the reason."""


# Redis away, full or stalled, or the socket to it broken: worth trying again later.
REDIS_TROUBLE: tuple[type[Exception], ...] = (RedisError, OSError, RedisUnavailableError)


class Refusal(TypedDict):
    """What the page or fragment of a refusal shows (an action's answer has this shape)."""

    ok: bool
    message: str
    target: str


def refusal(request: Request, message: str) -> Refusal:
    """A refusal of what the request's path names (`queue/job`, or `*`)."""
    target = "/".join(str(v) for v in request.path_params.values()) or "*"
    return {"ok": False, "message": message, "target": target}


def status_of(exc: Exception, reading: bool = True) -> int:
    """The HTTP status of a refusal. `reading`: a GET of a page or its JSON, where any other
    refusal is about what the URL names (a queue name no queue can have, a job id no flow
    key can hold): a missing page. An action's other refusals are its input's fault."""
    if isinstance(exc, UnknownQueueError | JobNotFoundError):
        return 404
    if isinstance(exc, JobStateError):
        return 409
    if isinstance(exc, InvalidSearchError):
        return 400
    if isinstance(exc, ValueError) or not reading:
        return 422
    return 404


async def domain_error(request: Request, exc: Exception) -> Response:
    """A refusal raised by a page or its JSON twin: `{"error": ...}` or the error page."""
    status = status_of(exc, reading=request.method in ("GET", "HEAD"))
    message = str(exc)
    if wants_json(request) or request.url.path.endswith(".json"):
        return JSONResponse({"error": message}, status_code=status)
    result = refusal(request, message)
    if is_htmx(request):
        return render(request, "partials/_action_result.html", {"result": result},
                      status_code=status)
    queue = request.path_params.get("name") or request.path_params.get("queue")
    context = await page_context(request, "overview", str(queue) if queue else None)
    context.update(result=result, **_what_is_missing(request, exc, status, queue))
    return render(request, ERROR_PAGE, context, status_code=status)


# The thing a page shows, when its route's name does not say it as `<thing>_page`.
_SUBJECTS = {"queue_latest": "Queue", "job_data": "Job", "job_logs": "Job",
             "job_messages": "Job"}


def _what_is_missing(request: Request, exc: Exception, status: int, queue: object
                     ) -> dict[str, object]:
    """The error page's heading, a hint and the link back."""
    route = getattr(request.scope.get("route"), "name", "") or ""
    subject = _SUBJECTS.get(route) or route.removesuffix("_page").replace("_", " ").capitalize()
    if isinstance(exc, UnknownQueueError):
        subject = "Queue"
    back = None
    if queue and (status != 404 or subject != "Queue"):  # the queue is there
        back = {"label": str(queue), "url": str(path_for(request, "queue_page", name=queue))}
    if status != 404:
        return {"heading": "This page cannot be shown", "back": back, "hint": ""}
    return {"heading": f"{subject or 'Page'} not found", "back": back,
            "hint": "This queue does not exist under this prefix." if subject == "Queue"
            else ""}


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


async def redis_full(request: Request, exc: Exception) -> Response:
    """Redis at maxmemory (policy noeviction) refused a write: a 503 that says how full it
    is and what to do, never a 500. Adding a job maps that to RedisFullError in the manager
    layer (a 422 of the action); any other write an action makes (pause, retry, remove...)
    comes here. Pages keep working: they read. Other ResponseErrors are bugs: re-raised."""
    if not is_redis_full(exc):
        raise exc
    error = await mail_of(request).monitoring.full_error("this change was not made")
    result = refusal(request, str(error))
    headers = {"Retry-After": str(REDIS_FULL_RETRY_AFTER_S)}
    if wants_json(request):
        return JSONResponse(result, status_code=503, headers=headers)
    template = "partials/_action_result.html" if is_htmx(request) else ERROR_PAGE
    response = render(request, template, {"result": result}, status_code=503)
    response.headers.update(headers)
    return response


def exception_handlers() -> Mapping[type[Exception], Callable[[Request, Exception],
                                                               Awaitable[Response]]]:
    """The app's `exception_handlers`: the most specific class of an error wins."""
    return {
        MailQueueError: domain_error,
        BadParameterError: domain_error,
        ResponseError: redis_full,
        **dict.fromkeys(REDIS_DOWN_ERRORS, redis_unavailable),
    }
