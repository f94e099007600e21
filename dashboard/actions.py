"""What every operator action shares: audit, error handling, and the three ways to answer.

An action handler does one thing through the manager layer and returns an `ActionResult`.
`operator_action` wraps it: the security middleware has already refused the request without
write access or CSRF token; here the outcome is written to the audit log (who, what, on what,
with what result) and answered as an htmx fragment shown in place, as JSON for scripts
(`/api/...` or `Accept: application/json`), or as a redirect for a plain HTML form.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager
from mailqueue.redis_memory import is_redis_full

from .context import mail_of
from .errors import status_of
from .render import is_htmx, render, wants_json
from .security import identity_of

log = logging.getLogger(__name__)


@dataclass
class ActionResult:
    """What an action did, in words for the operator, and where to go next."""

    message: str
    target: str
    ok: bool = True
    redirect: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    status: int = 200  # of a failure the handler returns rather than raises (404: not there)


ActionHandler = Callable[[Request, MailManager], Awaitable[ActionResult]]
Endpoint = Callable[[Request], Awaitable[Response]]


def safe_redirect(request: Request, fallback: str) -> str:
    """The page the form came from, when it is on this site; else `fallback`."""
    referer = request.headers.get("referer", "")
    parts = urlsplit(referer)
    # `//evil.example/x` (or `/\evil.example`) is a path to a server but, as a Location,
    # another site: browsers read a leading `//` or `/\` as "same scheme, other host".
    same_site_path = (parts.path.startswith("/") and not parts.path.startswith(("//", "/\\"))
                      and "\\" not in parts.path)
    if referer and parts.netloc == request.url.netloc and same_site_path:
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return fallback


def operator_action(action: str, *, audited: bool = False
                    ) -> Callable[[ActionHandler], Endpoint]:
    """Turn `handler(request, mail) -> ActionResult` into an audited endpoint.

    `audited`: the manager call the handler makes writes the audit entry itself, with the
    operator as actor (the mail desk's changes do); then only a refusal raised before it
    (a bad address, a bad reason) is written here, so no change is audited twice.
    """

    def decorate(handler: ActionHandler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            mail = mail_of(request)
            target = "/".join(str(v) for v in request.path_params.values()) or "*"
            raised = True
            try:
                result = await handler(request, mail)
                status, raised = result.status, False
            except (MailQueueError, ValueError) as exc:  # a refusal: audited, then answered
                result = ActionResult(str(exc), target, ok=False)
                status = status_of(exc, reading=False)
            try:
                if raised or not audited:
                    await mail.events.record_audit(
                        identity_of(request).user, action, result.target,
                        "ok" if result.ok else "error", result.message,
                    )
            except Exception as exc:  # the action happened; a lost audit line must not hide it
                if is_redis_full(exc):  # one line, not a traceback per action
                    log.warning("could not write the audit entry for %s: Redis is out of "
                                "memory (maxmemory)", action)
                else:
                    log.exception("could not write the audit entry for %s", action)
            if wants_json(request):
                body = {"ok": result.ok, "message": result.message, "target": result.target,
                        **result.data}
                return JSONResponse(body, status_code=status)
            if is_htmx(request):
                response = render(request, "partials/_action_result.html",
                                  {"result": result}, status_code=200 if result.ok else status)
                if result.ok and result.redirect:
                    response.headers["HX-Location"] = result.redirect
                return response
            if not result.ok:
                return render(request, "pages/error.html", {"result": result},
                              status_code=status)
            return RedirectResponse(result.redirect or safe_redirect(request, "/"),
                                    status_code=303)

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return decorate


async def form_data(request: Request) -> dict[str, str]:
    """Form fields as plain strings (the last value wins), from a form or a JSON body."""
    if is_json_body(request):
        body = await json_object(request, MailQueueError)
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def is_json_body(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


async def json_object(request: Request, refuse: type[Exception] = ValueError
                      ) -> dict[str, Any]:
    """The request's JSON body, an object; else `refuse` with the reason, one line."""
    try:
        body = await request.json()
    except ValueError:
        raise refuse("The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise refuse("The body must be a JSON object")
    return body
