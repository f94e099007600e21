"""Scenario 7 of the fault suite: who may change what, and what can never run.

- Every mutating route, enumerated from the route table (any method but GET/HEAD), is refused
  without credentials or with wrong ones (401, when DASHBOARD_AUTH is set), without the CSRF
  token, with a wrong one or without its cookie (403), with the viewer's (read-only role)
  credentials and in read-only mode (403) - and Redis is byte for byte the same afterwards.
  The same requests with the operator's credentials and token are not refused (so the
  refusals above were for the missing piece, not for a bad request).
- Every other route - pages, JSON, the SSE streams (`/live`, `/api/events/stream`), static
  files, health and metrics - needs credentials too; the viewer may read them.
- Static paths cannot leave static/ (`..`, `%2e%2e%2f`, double-encoded, backslashes), asked
  through a real uvicorn with raw request lines.
- The outbox iframe cannot run the mail's scripts (Chromium): `sandbox` without
  allow-scripts, and the HTML route's own CSP.
- The CLI refuses to serve the dashboard on a non-loopback address without credentials.
- Error pages (404, 405, 422) do not reflect their input unescaped.

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/security.json.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosmtplib
import pytest
from bullmq import Job
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from mailqueue.dashboard.app import create_app, routes
from mailqueue.manager import MailManager
from mailqueue.redis_server import free_port
from tests.app_support import uvicorn_serving
from tests.faults.desk_seed import seed_desk
from tests.waiting import eventually

from .test_xss import CORPUS, asgi_request, html_problems, load_browser_support, report

ADMIN, VIEWER = ("admin", "admin-secret"), ("viewer", "viewer-secret")
TOKEN = "k" * 43
QUEUE = "sec"
STATS: collections.Counter[str] = collections.Counter()
_browser_support = load_browser_support()
chromium = _browser_support.chromium
browser = _browser_support.browser


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def mutating_routes() -> list[Route]:
    return [r for r in routes() if isinstance(r, Route)
            and set(r.methods or ()) - {"GET", "HEAD"}]


def reading_routes() -> list[Route | Mount]:
    return [r for r in routes() if isinstance(r, Mount) or not set(r.methods or ()) - {
        "GET", "HEAD"}]


# --- fixtures -------------------------------------------------------------------------------


def make_app(mail: MailManager, **changes: Any) -> Starlette:
    settings = mail.settings.model_copy(update={
        "dashboard_auth": ":".join(ADMIN), "dashboard_viewer_auth": ":".join(VIEWER),
        **changes})
    application = create_app(settings, mail)
    application.state.mail = mail
    application.state.live_hub = None
    return application


@pytest.fixture
async def apps(mail: MailManager) -> AsyncIterator[dict[str, Starlette]]:
    made = {"auth": make_app(mail), "read_only": make_app(mail, dashboard_read_only=True)}
    yield made
    for application in made.values():
        if application.state.live_hub is not None:
            await application.state.live_hub.close()


@pytest.fixture
async def seeded(mail: MailManager) -> dict[str, str]:
    """A failed, a delayed and a waiting job, a scheduler and a mail: something to change."""

    async def boom(data: Any, job: Job) -> None:
        raise RuntimeError("boom")

    await mail.add_job(QUEUE, "boom", {}, jobId="f1", attempts=1)
    mail.start_worker(QUEUE, {"boom": boom})
    await eventually(lambda: mail.queues.get_job_counts(QUEUE), 20, "the job failed",
                     accept=lambda counts: counts.get("failed", 0) >= 1)
    await mail.stop_worker(QUEUE)
    await mail.add_job(QUEUE, "later", {}, jobId="d1", delay=3_600_000)
    await mail.add_job(QUEUE, "waits", {}, jobId="w1")
    await mail.schedule_job(QUEUE, "tick", {}, every=3_600_000, scheduler_id="s1")
    sink = await mail.start_dev_sink()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "x"
    message.set_content("text")
    message.add_alternative(
        "<html><head><title>mail</title></head><body><h1>Mail</h1>"
        "<script>parent.__xss = 'parent'; window.__xss = 'self'; document.title = 'ran';"
        "</script><img src=x onerror=\"parent.__xss = 'img'; window.__xss = 'img'\">"
        "<form action=\"/queues/pause-all\" method=post><button id=b>go</button></form>"
        "</body></html>", subtype="html")
    await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)
    message_id = (await mail.outbox.list_messages(1))[0]["id"]
    return {"name": QUEUE, "queue": QUEUE, "job_id": "f1", "scheduler_id": "s1",
            "message_id": message_id, "path": "app.css",
            **await seed_desk(mail, QUEUE, "f1")}


async def snapshot(mail: MailManager) -> dict[str, bytes]:
    """Every key of the test's prefix, dumped (value and type, byte for byte)."""
    client = mail.client
    keys = [k async for k in client.scan_iter(match=f"{mail.settings.queue_prefix}*",
                                              count=1000)]
    dumps: dict[str, bytes] = {}
    for key in sorted(keys):
        dumped = await client.execute_command("DUMP", key, NEVER_DECODE=True)
        if dumped is not None:
            dumps[key] = dumped
    return dumps


def path_of(route: Route | Mount, values: dict[str, str]) -> str:
    if isinstance(route, Mount):
        return f"{route.path}/{values['path']}"
    params = {}
    for name in route.param_convertors:
        value = values[name]
        if name == "job_id" and "promote" in route.path:
            value = "d1"
        if name == "name" and "/templates" in route.path:
            value = "welcome"  # a template's name, not a queue's
        params[name] = quote(value, safe="") if name in ("job_id", "scheduler_id") else value
    return str(route.url_path_for(route.name, **params))


FORM = {"confirm_name": QUEUE, "name": "added", "data": "{}", "job_id": "w1",
        "state": "waiting", "grace": "0", "delayed": "1", "force": "1"}


def form_body(token: str | None) -> bytes:
    from urllib.parse import urlencode

    fields = dict(FORM)
    if token is not None:
        fields["csrf_token"] = token
    return urlencode(fields).encode()


# --- mutating routes ------------------------------------------------------------------------


async def test_every_mutating_route_is_refused_without_rights(
    mail: MailManager, apps: dict[str, Starlette], seeded: dict[str, str]
) -> None:
    routes_ = mutating_routes()
    assert len(routes_) >= 30, [r.path for r in routes_]
    form = {"content-type": "application/x-www-form-urlencoded"}
    cookie = {"cookie": f"mq_csrf={TOKEN}"}
    admin, viewer = {"authorization": basic(*ADMIN)}, {"authorization": basic(*VIEWER)}
    cases: list[tuple[str, str, dict[str, str], bytes, int]] = [
        # (case, app, headers, body, expected status)
        ("no credentials", "auth", {**form, **cookie}, form_body(TOKEN), 401),
        ("wrong password", "auth", {**form, **cookie, "authorization": basic("admin", "x")},
         form_body(TOKEN), 401),
        ("viewer password for admin", "auth",
         {**form, **cookie, "authorization": basic("admin", VIEWER[1])}, form_body(TOKEN), 401),
        ("garbage authorization", "auth", {**form, **cookie, "authorization": "Basic !!!"},
         form_body(TOKEN), 401),
        ("bearer of a password", "auth",
         {**form, **cookie, "authorization": f"Bearer {ADMIN[1]}"}, form_body(TOKEN), 401),
        ("no CSRF token", "auth", {**form, **cookie, **admin}, form_body(None), 403),
        ("wrong CSRF token", "auth", {**form, **cookie, **admin}, form_body("j" * 43), 403),
        ("token without its cookie", "auth", {**form, **admin, "x-csrf-token": TOKEN},
         form_body(TOKEN), 403),
        ("empty token and cookie", "auth",
         {**form, **admin, "cookie": "mq_csrf=", "x-csrf-token": ""}, form_body(""), 403),
        ("JSON without token", "auth",
         {"content-type": "application/json", **cookie, **admin}, b'{"confirm_name": "sec"}',
         403),
        ("viewer", "auth", {**form, **cookie, **viewer, "x-csrf-token": TOKEN},
         form_body(TOKEN), 403),
        ("read-only mode", "read_only", {**form, **cookie, **admin, "x-csrf-token": TOKEN},
         form_body(TOKEN), 403),
    ]
    before = await snapshot(mail)
    assert any(k.endswith(":f1") for k in before)
    refused = 0
    for route in routes_:
        path = path_of(route, seeded)
        for method in [*sorted(set(route.methods or ()) - {"GET", "HEAD"}), "PUT", "DELETE",
                       "PATCH"]:
            for case, app_name, headers, body, expected in cases:
                if method != "POST" and case not in ("no credentials", "no CSRF token",
                                                     "viewer", "read-only mode"):
                    continue
                response = await asgi_request(apps[app_name], method, path, headers=headers,
                                              body=body)
                assert response.error is None, response.error
                assert response.status == expected, (case, method, path, response.status,
                                                     response.text)
                if expected == 401:
                    assert response.headers["www-authenticate"].startswith("Basic ")
                refused += 1
    after = await snapshot(mail)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"refused requests changed Redis: {changed}"

    # The control: the operator with the token is not refused, and things change.
    allowed = 0
    for route in sorted(routes_, key=lambda r: "obliterate" in r.path):
        path = path_of(route, seeded)
        response = await asgi_request(
            apps["auth"], "POST", path, body=form_body(TOKEN),
            headers={**form, **cookie, **admin, "accept": "application/json"})
        assert response.error is None, response.error
        assert response.status not in (401, 403), (path, response.status, response.text)
        allowed += 1
    assert await snapshot(mail) != after
    STATS.update(mutating_routes=len(routes_), refused_requests=refused,
                 keys_compared=len(before), allowed_controls=allowed)


# --- reading routes -------------------------------------------------------------------------


# What a reading route needs in its query to answer with its page (others need none).
QUERIES = {"live": b"view=overview", "schedule_preview": b"cron=0+9+*+*+*",
           "api_schedule_preview": b"cron=0+9+*+*+*"}


async def test_every_page_api_stream_and_file_needs_credentials(
    apps: dict[str, Starlette], seeded: dict[str, str]
) -> None:
    reading = reading_routes()
    names = {r.name for r in reading}
    assert {"live", "api_event_stream", "static", "health", "metrics", "api_queues"} <= names
    for route in reading:
        path = path_of(route, seeded)
        query = QUERIES.get(route.name or "", b"")
        for headers in ({}, {"authorization": basic("viewer", "nope")},
                        {"authorization": "Bearer nope"}):
            response = await asgi_request(apps["auth"], "GET", path, query=query,
                                          headers=headers)
            assert response.status == 401, (path, headers, response.status)
            assert not response.body.startswith(b"<"), path  # says nothing of the page
        viewed = await asgi_request(apps["auth"], "GET", path, query=query,
                                    headers={"authorization": basic(*VIEWER)})
        assert viewed.error is None, viewed.error
        # The viewer reads every page of seeded data; a route that only points elsewhere
        # (a job's messages without htmx) sends it to a page of the dashboard.
        location = dict(viewed.headers).get("location", "")
        assert viewed.status == 200 or (viewed.status == 303 and location.startswith("/")), \
            (path, viewed.status)
        if route.name in ("live", "api_event_stream"):
            assert viewed.status == 200
            assert viewed.headers["content-type"].startswith("text/event-stream"), path
        STATS["reading_routes"] += 1


# --- static files ---------------------------------------------------------------------------

SETTINGS_SOURCE = (Path(__file__).resolve().parents[2] / "mailqueue" / "settings.py").read_bytes()
TRAVERSALS = [
    "/static/../mailqueue/settings.py", "/static/../../main/mailqueue/settings.py",
    "/static/%2e%2e/mailqueue/settings.py", "/static/%2e%2e%2fmailqueue%2fsettings.py",
    "/static/..%2fmailqueue%2fsettings.py", "/static/..%2Fmailqueue%2Fsettings.py",
    "/static/%252e%252e%252fmailqueue%252fsettings.py", "/static/..%252fmailqueue/settings.py",
    "/static/..\\mailqueue\\settings.py", "/static/..%5cmailqueue%5csettings.py",
    "/static/%2e%2e%5cmailqueue%5csettings.py", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "/static/....//mailqueue/settings.py",
    "/static/vendor/../../mailqueue/settings.py", "/static/.%2e/mailqueue/settings.py",
    "/static/%c0%ae%c0%ae/mailqueue/settings.py", "/static/%00../mailqueue/settings.py",
    "/static/app.css%00.py", "/static/../.git/config", "/static/%2e%2e/.git/config",
]


async def _raw_get(port: int, target: str, authorization: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Authorization: {authorization}\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
async def server_port(apps: dict[str, Starlette]) -> AsyncIterator[int]:
    async with uvicorn_serving(apps["auth"]) as port:
        yield port


async def test_static_paths_cannot_leave_static(server_port: int,
                                                apps: dict[str, Starlette]) -> None:
    secret = SETTINGS_SOURCE
    auth = basic(*VIEWER)
    status, body = await _raw_get(server_port, "/static/app.css", auth)
    assert status == 200 and body  # the control: static files are served
    statuses: collections.Counter[int] = collections.Counter()
    for target in TRAVERSALS:
        status, body = await _raw_get(server_port, target, auth)
        statuses[status] += 1
        assert status in (400, 404), (target, status, body[:200])
        assert b"class Settings" not in body and b"root:" not in body, target
        assert b"[core]" not in body, target
        # And at the ASGI level, with the path exactly as written (decoded once).
        from urllib.parse import unquote

        response = await asgi_request(apps["auth"], "GET", unquote(target),
                                      raw_path=target.encode(),
                                      headers={"authorization": auth})
        assert response.error is None, (target, response.error)
        assert response.status in (400, 404), (target, response.status)
        assert secret[:200] not in response.body
    STATS["traversals"] = len(TRAVERSALS)
    STATS["traversal_statuses"] = dict(statuses)  # type: ignore[assignment]


# --- the outbox iframe ----------------------------------------------------------------------


async def test_outbox_iframe_runs_no_script(apps: dict[str, Starlette], server_port: int,
                                            seeded: dict[str, str], browser: Any) -> None:
    base = f"http://127.0.0.1:{server_port}"
    message_id = seeded["message_id"]
    context = await browser.new_context(http_credentials={"username": ADMIN[0],
                                                          "password": ADMIN[1]})
    context.set_default_timeout(15_000)
    dialogs: list[str] = []
    requests: list[str] = []
    try:
        page = await context.new_page()
        page.on("dialog", lambda d: dialogs.append(d.message))
        page.on("request", lambda r: requests.append(r.url))
        response = await page.goto(f"{base}/outbox/{message_id}", wait_until="load")
        assert response is not None and response.status == 200
        frame_element = await page.wait_for_selector("iframe.mail-html")
        assert frame_element is not None
        sandbox = await frame_element.get_attribute("sandbox")
        assert sandbox is not None and "allow-scripts" not in sandbox, sandbox
        assert "allow-same-origin" not in sandbox
        frame = await frame_element.content_frame()
        assert frame is not None
        await frame.wait_for_load_state("load")
        await page.wait_for_timeout(300)
        assert await frame.evaluate("() => document.querySelector('h1').textContent") == "Mail"
        assert await page.evaluate("() => typeof window.__xss") == "undefined"
        assert await frame.evaluate("() => typeof window.__xss") == "undefined"
        assert await frame.evaluate("() => document.title") == "mail"
        # The route's own CSP, whoever frames or opens it.
        html = await page.request.get(f"{base}/outbox/{message_id}/html")
        csp = html.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
        top = await context.new_page()
        await top.goto(f"{base}/outbox/{message_id}/html", wait_until="load")
        await top.wait_for_timeout(300)
        assert await top.evaluate("() => typeof window.__xss") == "undefined"
        assert await top.evaluate("() => document.title") == "mail"
        assert not dialogs
        assert not any("pause-all" in url for url in requests), requests
    finally:
        await context.close()
    STATS["iframe_scripts_run"] = 0


# --- the CLI --------------------------------------------------------------------------------


CLI_CASES = [
    ("0.0.0.0", {}, "dashboard"), ("::", {}, "dashboard"), ("0.0.0.0", {}, "run"),
    ("0.0.0.0", {"DASHBOARD_AUTH": ""}, "dashboard"),
    ("0.0.0.0", {"DASHBOARD_AUTH": " "}, "dashboard"),
    ("0.0.0.0", {"DASHBOARD_AUTH": ","}, "dashboard"),
    ("::", {"DASHBOARD_AUTH": " , "}, "run"),
    ("0.0.0.0", {"DASHBOARD_VIEWER_AUTH": "viewer:secret"}, "dashboard"),
    ("0.0.0.0", {"DASHBOARD_AUTH": "admin:"}, "dashboard"),
]


@pytest.mark.parametrize(("host", "auth_env", "command"), CLI_CASES,
                         ids=[f"{c}-{h}-{'+'.join(f'{k}={v!r}' for k, v in e.items()) or 'unset'}"
                              for h, e, c in CLI_CASES])
def test_cli_refuses_a_public_address_without_credentials(
    host: str, auth_env: dict[str, str], command: str, tmp_path: Path, redis_url: str,
    prefix: str
) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DASHBOARD_") and k not in ("REDIS_URL", "SMTP_URL")}
    env.update(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, DATA_DIR=str(tmp_path / "data"),
               DASHBOARD_PORT=str(free_port()), **auth_env)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mailqueue.cli", command, "--host", host], env=env,
            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`mailqueue {command} --host {host}` with {auth_env} started serving")
    assert result.returncode == 1, (result.stdout, result.stderr[-2000:])
    expected = "DASHBOARD_AUTH" if "admin:" in auth_env.values() else \
        "refusing to serve the dashboard"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    STATS["cli_refusals"] += 1


# --- error pages ----------------------------------------------------------------------------


async def test_error_pages_do_not_reflect_input(apps: dict[str, Starlette],
                                                seeded: dict[str, str]) -> None:
    headers = {"authorization": basic(*ADMIN), "cookie": f"mq_csrf={TOKEN}",
               "x-csrf-token": TOKEN}
    seen: collections.Counter[int] = collections.Counter()
    for payload in CORPUS:
        encoded = quote(payload, safe="")
        cases = [
            ("GET", f"/{payload}", b"", 404),  # from the router
            ("GET", f"/queues/{payload.replace('/', '')}x", b"", 404),  # queue page
            ("GET", f"/queues/{QUEUE}/jobs/{payload}", b"", 404),  # job page
            ("GET", f"/outbox/{payload.replace('/', '')}", b"", 404),  # message
            ("GET", f"/queues/{QUEUE}/pause", b"", 405),
            ("GET", f"/queues/{QUEUE}", f"state={encoded}".encode(), 422),
            ("GET", f"/queues/{QUEUE}", f"sort={encoded}&page=x".encode(), 422),
            ("POST", f"/queues/{QUEUE}/clean", b"", 422),  # the state is in the form
            ("POST", f"/queues/{QUEUE}/add-job", b"", 422),  # bad JSON
        ]
        for method, path, query, status in cases:
            body = b""
            request_headers = dict(headers)
            if method == "POST":
                from urllib.parse import urlencode

                request_headers["content-type"] = "application/x-www-form-urlencoded"
                body = urlencode({"state": payload, "name": payload, "data": payload,
                                  "grace": payload}).encode()
            response = await asgi_request(apps["auth"], method, path, query=query,
                                          headers=request_headers, body=body)
            assert response.error is None, response.error
            assert response.status == status, (method, path, query, response.status)
            seen[response.status] += 1
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/html"):
                assert not html_problems(response.text), (path, html_problems(response.text))
            else:
                assert content_type.startswith(("text/plain", "application/json")), path
                assert response.headers.get("x-content-type-options") == "nosniff", path
    assert set(seen) == {404, 405, 422}, seen
    STATS["error_pages"] = sum(seen.values())


def test_write_figures() -> None:
    """Last in the file: the run's figures."""
    report("security", dict(STATS))
