"""The public one-click unsubscribe app (RFC 8058): its own routes and nothing else.

    POST /{token}   body List-Unsubscribe=One-Click (application/x-www-form-urlencoded or
                    multipart/form-data): the token's address goes on the suppression list
                    (reason "unsubscribe", by "unsubscribe"); 200, again 200 the next time.
    GET  /{token}   a confirmation page (the address partly masked) whose button POSTs that
                    same form. A GET never unsubscribes: mail scanners and link previews
                    follow every link in a message.

Anything else is 404: this app is made to be reachable from the internet, and it shares no
route, middleware or state with the dashboard (mailqueue.dashboard.app), which stays on
127.0.0.1 behind its credentials. A bad token is a 400 with a one-line reason; nothing of
the request is ever echoed back.

Served by `mailqueue unsubscribe-server`, or mounted in a user's own app:
`app.mount("/u", create_unsubscribe_app(settings))` (docs/mail.md, "Unsubscribe").

No cookie, no session, no CSRF token, by design: the signed token in the URL is the whole
authority, and all it can do is unsubscribe the one address it names — which is exactly what
its holder (the recipient, or their mail provider acting for them, RFC 8058 section 3.2) is
entitled to do. A CSRF token protects a request that rides on a victim's ambient
credentials (a cookie); there is none here, and a mail provider's POST could not carry one.
Another site's page making a browser POST the form gains nothing it could not do by
POSTing the link itself. The host name is not checked either (the dashboard's defence
against DNS rebinding protects credentials and a private network; this app is public and
has neither).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailqueue.errors import MailQueueError
from mailqueue.mail.errors import InvalidMailDataError
from mailqueue.mail.suppressions import SuppressionList
from mailqueue.mail.unsubscribe import (
    UnsubscribeToken,
    UnsubscribeTokenError,
    read_token,
    settings_secret,
)
from mailqueue.manager import MailManager
from mailqueue.settings import Settings

from .errors import REDIS_TROUBLE
from .security import replaying

# What the suppression list's Redis raises when it cannot answer.
UNAVAILABLE: tuple[type[Exception], ...] = (*REDIS_TROUBLE, MailQueueError)

log = logging.getLogger(__name__)

# RFC 8058 section 3.1: the POST body holds this one key/value pair.
ONE_CLICK_KEY, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"
# A one-click body is 26 bytes (a few hundred as multipart): more is not a mail provider's.
MAX_BODY_BYTES = 16 * 1024

_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',Arial,sans-serif;margin:0;"
    "background:#f4f5f7;color:#1f2933}"
    "main{max-width:28rem;margin:4rem auto;padding:2rem;background:#fff;"
    "border:1px solid #d9dce1;border-radius:8px}"
    "h1{font-size:1.3rem;margin:0 0 1rem}p{line-height:1.5;margin:0 0 1rem}"
    "button{font:inherit;font-weight:600;padding:.6rem 1.2rem;border:0;border-radius:6px;"
    "background:#1d4ed8;color:#fff;cursor:pointer}"
    "button:focus-visible{outline:3px solid #93c5fd;outline-offset:2px}"
    ".small{font-size:.875rem;color:#52606d;margin:1rem 0 0}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# No script at all, the one inline style block allowed by its hash; the form posts back here.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    # The token is in the URL: no other site may see it in a Referer.
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-robots-tag": "noindex, nofollow",
}


class SecurityHeaders:
    """The headers above on every response of this app (404s and errors included), and a
    Set-Cookie never: pure ASGI, so no route can forget them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                del headers["set-cookie"]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mask_address(address: str) -> str:
    """`ada.lovelace@example.com` -> `a**********e@example.com`: enough for its owner to
    recognise, little for whoever else holds the link (a forwarded message)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if len(local) <= 2:
        shown = local[:1] + "*" * max(len(local) - 1, 1)
    else:
        shown = local[0] + "*" * (len(local) - 2) + local[-1]
    return f"{shown}@{domain}" if domain else shown


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    """A whole page; `title` and `body` are already escaped HTML."""
    return HTMLResponse(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta name=\"robots\" content=\"noindex, nofollow\">"
        f"<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n",
        status_code=status_code,
    )


def _refused(exc: UnsubscribeTokenError) -> HTMLResponse:
    # The reason is ours (a fixed sentence per kind), escaped all the same.
    return _page("Link not valid", f"<h1>This unsubscribe link cannot be used</h1>"
                                   f"<p>{html.escape(exc.reason)}</p>", 400)


def _looks_like_token(token: str) -> bool:
    # `<payload>.<mac>`: anything else under / (favicon.ico aside, "queues", "health") is
    # no token at all, and a 404 as for any other unknown path.
    return "." in token and not token.startswith(".") and len(token) > 20


class _Suppressions:
    """The suppression list of the app's MailManager: the one given, or its own opened in
    the lifespan — or at the first request, when a parent app mounts this one without
    running its lifespan (Starlette does not run a mounted app's)."""

    def __init__(self, settings: Settings, mail: MailManager | None) -> None:
        self.settings = settings
        self.mail = mail
        self.owned: MailManager | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> SuppressionList:
        if self.mail is not None:
            return self.mail.desk.suppressions
        async with self._lock:
            if self.owned is None:
                self.owned = await MailManager(self.settings).start()
        return self.owned.desk.suppressions

    async def close(self) -> None:
        owned, self.owned = self.owned, None
        if owned is not None:
            await owned.close()


async def _read_form(request: Request) -> dict[str, str] | Response:
    """The POST's fields (urlencoded or multipart), or the response refusing it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return PlainTextResponse("Request body too large", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return PlainTextResponse("Request body too large", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ("", "application/x-www-form-urlencoded"):
        try:
            return dict(parse_qsl(body.decode("utf-8"), max_num_fields=50))
        except (UnicodeDecodeError, ValueError):
            return PlainTextResponse("Bad request: the form is not valid", 400)
    if media_type == "multipart/form-data":
        content_type = request.headers["content-type"]
        fields = await _multipart(request.scope, content_type, body)
        boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
        if (fields is None or ONE_CLICK_KEY not in fields) and boundary.startswith("--"):
            # RFC 8058 section 8.3's example, as printed, declares `boundary=---Form...` and
            # delimits with that bare value; erratum 5117 fixes the parameter to `-Form...`.
            # A receiver that copied the example sends exactly those bytes: read them so.
            fields = await _multipart(request.scope, content_type.replace(
                f"boundary={boundary}", f"boundary={boundary[2:]}", 1), body)
        if fields is None:
            return PlainTextResponse("Bad request: the form is not valid", 400)
        return fields
    return PlainTextResponse(
        "Unsupported media type: send List-Unsubscribe=One-Click as "
        "application/x-www-form-urlencoded or multipart/form-data", 415)


async def _multipart(scope: Scope, content_type: str, body: bytes) -> dict[str, str] | None:
    """A multipart/form-data body's text fields, or None when it does not parse (or holds
    a file: a one-click form has none)."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
    headers.append((b"content-type", content_type.encode("latin-1")))
    request = Request({**scope, "headers": headers}, replaying(body))
    try:
        async with request.form(max_files=0, max_fields=50) as form:
            return {k: v for k, v in form.items() if isinstance(v, str)}
    except Exception:  # python-multipart's errors (HTTPException in an app), a file part
        return None


def create_unsubscribe_app(settings: Settings | None = None,
                           mail: MailManager | None = None) -> Starlette:
    """The unsubscribe app. Given a started MailManager it shares it; else it opens its own
    in its lifespan (or at the first request when mounted without one) and closes it there.

    MAIL_UNSUBSCRIBE_SECRET must be set (UnsubscribeSettingsError now, not at a request).
    """
    settings = settings or (mail.settings if mail else Settings())
    secret = settings_secret(settings)
    suppressions = _Suppressions(settings, mail)

    def token_of(request: Request) -> UnsubscribeToken | Response:
        """The request's token read, or the answer: a 404 when the path is not a token, the
        refusal when the token does not hold."""
        token = request.path_params["token"]
        if not _looks_like_token(token):
            return PlainTextResponse("Not Found", 404)
        try:
            return read_token(secret, token)
        except UnsubscribeTokenError as exc:
            return _refused(exc)

    async def confirm(request: Request) -> Response:
        token = token_of(request)
        if isinstance(token, Response):
            return token
        masked = html.escape(mask_address(token.address))
        what = (f"the e-mails of <strong>{html.escape(token.list_name)}</strong>"
                if token.list_name else "these e-mails")
        # No action: the form posts to this very URL, whatever prefix the app is mounted at.
        return _page("Unsubscribe", (
            f"<h1>Unsubscribe?</h1><p>Stop sending {what} to <strong>{masked}</strong>.</p>"
            f'<form method="post"><input type="hidden" name="{ONE_CLICK_KEY}" '
            f'value="{ONE_CLICK_VALUE}"><button type="submit">Unsubscribe</button></form>'
            '<p class="small">Nothing changes until you press the button.</p>'))

    async def unsubscribe(request: Request) -> Response:
        token = token_of(request)
        if isinstance(token, Response):
            return token
        form = await _read_form(request)
        if isinstance(form, Response):
            return form
        if form.get(ONE_CLICK_KEY) != ONE_CLICK_VALUE:
            return PlainTextResponse(
                f"Bad request: the body must say {ONE_CLICK_KEY}={ONE_CLICK_VALUE} (RFC 8058)",
                400)
        note = f"one-click, list {token.list_name}" if token.list_name else "one-click"
        try:
            listed = await suppressions.get()
            added = await listed.add(token.address, "unsubscribe", by="unsubscribe", note=note)
        except InvalidMailDataError:  # signed by us, yet no address: a bug, not the reader's
            return PlainTextResponse("Bad request: the link names no valid address", 400)
        except UNAVAILABLE as exc:  # Redis away, full or stalled
            log.warning("unsubscribe: the suppression list is unavailable: %s",
                        type(exc).__name__)
            return PlainTextResponse(
                "The service is unavailable: nothing changed, try again in a minute", 503,
                headers={"retry-after": "30"})
        log.info("unsubscribe: %s %s", mask_address(token.address),
                 "added to the suppression list" if added else "was on it already")
        masked = html.escape(mask_address(token.address))
        return _page("Unsubscribed", f"<h1>You are unsubscribed</h1><p><strong>{masked}"
                                     "</strong> will get no more of these e-mails.</p>")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await suppressions.get()
            yield
        finally:
            await suppressions.close()

    app = Starlette(
        routes=[Route("/{token}", confirm, methods=["GET"]),
                Route("/{token}", unsubscribe, methods=["POST"])],
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders)
    return app
