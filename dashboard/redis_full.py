"""Redis at maxmemory: an action that writes is answered with why, never a 500.

At `maxmemory` with policy `noeviction` Redis still reads but refuses writes ("OOM command
not allowed..."). Adding a job maps that to `RedisFullError` in the manager layer (and
`operator_action` answers 422 with its message); any other write an action makes (pause,
retry, remove...) reaches this handler, which answers 503 with the same kind of message:
that Redis is out of memory, how full it is, and what to do. Pages keep working: they read.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.redis_memory import is_redis_full, redis_full_error

from .actions import ActionResult, mail_of, wants_json
from .render import is_htmx, render


async def redis_full_handler(request: Request, exc: Exception) -> Response:
    """Exception handler for redis ResponseError: the OOM case only, others re-raised."""
    if not is_redis_full(exc):
        raise exc
    error = await redis_full_error(mail_of(request).client, "this change was not made")
    target = "/".join(str(v) for v in request.path_params.values()) or "*"
    result = ActionResult(str(error), target, ok=False)
    headers = {"Retry-After": "60"}
    if wants_json(request):
        return JSONResponse({"ok": False, "message": result.message, "target": target},
                            status_code=503, headers=headers)
    template = "partials/_action_result.html" if is_htmx(request) else "pages/action_error.html"
    response = render(request, template, {"result": result}, status_code=503)
    response.headers.update(headers)
    return response
