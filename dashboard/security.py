"""Who may see and change what: host names, authentication, roles, CSRF, read-only mode,
headers.

One pure-ASGI middleware guards every route, so no handler can forget a check:
- The Host must be one the dashboard is served under (`origins.AllowedHosts`: a defence
  against DNS rebinding), else 400.
- Authentication when DASHBOARD_AUTH is set: HTTP Basic (`user:password`) or a bearer token
  (a browser may also send the token as the Basic password). DASHBOARD_VIEWER_AUTH adds
  credentials with the read-only role. Failed attempts are limited per client
  (`login_limit.LoginLimiter`: 429 with Retry-After).
- Every state change (any method but GET/HEAD/OPTIONS) needs the CSRF token (header
  `X-CSRF-Token`, or form field `csrf_token`) matching the `mq_csrf` cookie; and is refused
  with 403 for the read-only role or in read-only mode (DASHBOARD_READ_ONLY); a browser's
  Origin (or Referer) must be the dashboard's own.
- Security headers on every response: a CSP without inline script, no framing, no sniffing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .login_limit import LoginLimiter
from .origins import AllowedHosts, same_origin

CSRF_COOKIE = "mq_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 11 * 1024 * 1024  # a job's data may be edited in a form: allow ~10 MB

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)


@dataclass(frozen=True)
class Credential:
    user: str
    secret: str
    is_token: bool
    can_write: bool


@dataclass(frozen=True)
class Identity:
    """Who is asking; stored in scope["mailqueue.identity"]."""

    user: str
    can_write: bool


def parse_credentials(value: str | None, can_write: bool) -> list[Credential]:
    """`user:password` or `token`, several separated by commas."""
    result = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if sep:
            if not user or not password:
                raise ValueError("DASHBOARD_AUTH entries are user:password or a token")
            result.append(Credential(user, password, False, can_write))
        else:
            result.append(Credential("token", item, True, can_write))
    return result


class SecurityMiddleware:
    def __init__(
        self, app: ASGIApp, *, credentials: list[Credential], read_only: bool,
        allowed_hosts: AllowedHosts | None = None, login_limiter: LoginLimiter | None = None,
        realm: str = "mailqueue",
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.read_only = read_only
        self.allowed_hosts = allowed_hosts or AllowedHosts()
        self.login_limiter = login_limiter or LoginLimiter()
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            # Starlette decodes it as UTF-8 wherever a URL is built; raw bytes (a client
            # that does not percent-encode) would make every such place a 500.
            bytes(scope.get("query_string", b"")).decode("utf-8")
        except UnicodeDecodeError:
            await _plain(send, 400, "Bad request: the query string is not UTF-8 "
                                    "(percent-encode it)")
            return
        conn = HTTPConnection(scope)
        if not self.allowed_hosts.allows(conn.headers.get("host")):
            await _plain(send, 400, "Bad request: this dashboard does not answer to that host "
                                    "name (an operator can add it to DASHBOARD_ALLOWED_HOSTS)")
            return
        client = conn.client.host if conn.client else ""
        wait = self.login_limiter.retry_after(client) if self.credentials else 0.0
        if wait > 0:
            await _plain(send, 429, "Too many failed logins: wait and try again",
                         {"retry-after": str(math.ceil(wait))})
            return
        identity = self._authenticate(conn)
        if identity is None:
            if conn.headers.get("authorization"):  # a wrong guess, not a first visit
                self.login_limiter.failed(client)
            await _plain(send, 401, "Authentication required",
                         {"www-authenticate": f'Basic realm="{self.realm}", charset="UTF-8"'})
            return
        if self.credentials:
            self.login_limiter.succeeded(client)
        if self.read_only:
            identity = Identity(identity.user, can_write=False)
        scope["mailqueue.identity"] = identity

        csrf = conn.cookies.get(CSRF_COOKIE) or ""
        fresh_csrf = "" if _valid_token_shape(csrf) else secrets.token_urlsafe(32)
        scope["mailqueue.csrf"] = csrf if not fresh_csrf else fresh_csrf

        method = scope.get("method", "GET")
        if method not in SAFE_METHODS:
            if not identity.can_write:
                await _plain(send, 403, "Read-only: this dashboard does not allow changes")
                return
            if not same_origin(conn.headers.get("origin"), conn.headers.get("referer"),
                               conn.headers.get("host")):
                await _plain(send, 403, "Refused: the request comes from another site's page")
                return
            body, receive = await _buffer_body(receive)
            if body is None:
                await _plain(send, 413, "Request body too large")
                return
            sent = conn.headers.get(CSRF_HEADER) or _form_token(conn, body)
            if fresh_csrf or not sent or not hmac.compare_digest(sent, csrf):
                await _plain(send, 403, "Missing or wrong CSRF token: reload the page")
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("referrer-policy", "same-origin")
                if headers.get("content-type", "").startswith("text/html"):
                    # A page is never kept in the back/forward cache: a cached page would
                    # hold its live (SSE) connection open, and six of them exhaust the
                    # browser's connections to this host, so the next page never loads.
                    headers.setdefault("cache-control", "no-store")
                if fresh_csrf:
                    headers.append(
                        "set-cookie",
                        f"{CSRF_COOKIE}={fresh_csrf}; Path=/; SameSite=Strict; HttpOnly",
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authenticate(self, conn: HTTPConnection) -> Identity | None:
        if not self.credentials:
            return Identity("anonymous", can_write=True)
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self._match(None, value.strip(), token_only=True)
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            return self._match(user, password, token_only=False)
        return None

    def _match(self, user: str | None, secret: str, token_only: bool) -> Identity | None:
        found: Identity | None = None
        offered = _digest(secret)
        for cred in self.credentials:
            # Compare every credential, and digests of equal length, so timing tells neither
            # which user exists nor how long a secret is.
            secret_ok = hmac.compare_digest(_digest(cred.secret), offered)
            if cred.is_token:
                if secret_ok and found is None:
                    found = Identity(user or "token", cred.can_write)
            elif not token_only:
                user_ok = hmac.compare_digest(_digest(cred.user), _digest(user or ""))
                if user_ok and secret_ok and found is None:
                    found = Identity(cred.user, cred.can_write)
        return found


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def identity_of(conn: HTTPConnection) -> Identity:
    identity: Identity = conn.scope.get("mailqueue.identity") or Identity("anonymous", True)
    return identity


def csrf_token_of(conn: HTTPConnection) -> str:
    return str(conn.scope.get("mailqueue.csrf", ""))


def _valid_token_shape(token: str) -> bool:
    return 32 <= len(token) <= 64 and all(c.isalnum() or c in "-_" for c in token)


def _form_token(conn: HTTPConnection, body: bytes) -> str | None:
    content_type = conn.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return None
    values = parse_qs(body.decode("latin-1"), max_num_fields=10_000).get(CSRF_FIELD)
    return values[0] if values else None


async def _buffer_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read the whole body (bounded), and give the app a receive that replays it."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None, receive
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body, replaying(body, receive)


def replaying(body: bytes, after: Receive | None = None) -> Receive:
    """A receive that gives the app `body`, read already, then asks `after` (none: the
    client is gone)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        if after is None:
            return {"type": "http.disconnect"}
        return await after()

    return replay


async def _plain(send: Send, status: int, text: str, headers: dict[str, str] | None = None
                 ) -> None:
    raw = [(b"content-type", b"text/plain; charset=utf-8"),
           (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
           (b"x-content-type-options", b"nosniff")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": text.encode()})
