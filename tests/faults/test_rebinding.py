"""Issue 11, security 1-3: DNS rebinding, password guessing, an open redirect.

Each test talks to a real uvicorn serving the dashboard (or runs the real CLI) and checks what
an attacker would get: nothing read, nothing enqueued, no guess looked at while blocked, no
redirect off the site.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from mailqueue.dashboard.app import create_app
from mailqueue.manager import MailManager
from mailqueue.redis_server import free_port

from .system import MailqueueProcess

PAGES = ["/", "/queues/rb", "/queues/rb/jobs/1", "/api/queues", "/api/queues/rb",
         "/outbox", "/api/outbox", "/events", "/workers", "/health", "/metrics",
         "/live?view=overview", "/static/app.css"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def csrf_of(http: httpx.AsyncClient) -> str:
    await http.get("/")
    token = http.cookies.get("mq_csrf")
    assert token, "no CSRF cookie from the overview"
    return token


async def test_a_rebound_host_gets_nothing_and_changes_nothing(mail: MailManager,
                                                               live_server: str) -> None:
    """The attack as reproduced: the page's own name resolves to 127.0.0.1."""
    await mail.add_job("rb", "send-reset-password",
                       {"to": "ada@example.com", "resetUrl": "https://x.example/reset?t=s3cr3t"})
    port = live_server.rsplit(":", 1)[1]
    evil = f"evil.example:{port}"
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as http:
        token = await csrf_of(http)  # the attacker's page can read it once rebound... or not
        for path in PAGES:
            answer = await http.get(path, headers={"Host": evil})
            assert answer.status_code == 400, (path, answer.status_code)
            assert "s3cr3t" not in answer.text and "ada@" not in answer.text
        added = await http.post(
            "/queues/rb/add-job", headers={"Host": evil, "Origin": f"http://{evil}",
                                           "X-CSRF-Token": token},
            data={"name": "send-welcome", "data": '{"to": "victim@example.com"}'})
        assert added.status_code == 400, added.text
    assert (await mail.queues.get_job_counts("rb"))["waiting"] == 1  # nothing enqueued


async def test_loopback_names_and_addresses_are_answered(mail: MailManager,
                                                         live_server: str) -> None:
    port = live_server.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as http:
        for host in ("127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "127.0.0.2",
                     "admin.localhost"):
            answer = await http.get("/health", headers={"Host": f"{host}:{port}"})
            assert answer.status_code == 200, (host, answer.status_code)


async def test_names_a_proxy_serves_are_answered_when_listed(mail: MailManager) -> None:
    settings = mail.settings.model_copy(
        update={"dashboard_allowed_hosts": "mail-admin.example.com, other.example"})
    app = create_app(settings, mail)
    app.state.mail, app.state.live_hub = mail, None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as http:
        assert (await http.get("/health", headers={"Host": "mail-admin.example.com"})
                ).status_code == 200
        assert (await http.get("/health", headers={"Host": "Other.Example:8443"})
                ).status_code == 200
        assert (await http.get("/health", headers={"Host": "evil.example"})).status_code == 400
    anything = mail.settings.model_copy(update={"dashboard_allowed_hosts": "*"})
    app = create_app(anything, mail)
    app.state.mail, app.state.live_hub = mail, None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as http:
        assert (await http.get("/health", headers={"Host": "evil.example"})).status_code == 200


@pytest.mark.parametrize("source", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Referer": "http://evil.example/page"},
    {"Origin": "http://127.0.0.1:1"},  # another port is another origin
])
async def test_a_change_from_another_sites_page_is_refused(mail: MailManager, live_server: str,
                                                           source: dict[str, str]) -> None:
    await mail.create_queue("rb")
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as http:
        token = await csrf_of(http)
        refused = await http.post("/api/queues/rb/pause",
                                  headers={"X-CSRF-Token": token, **source})
        assert refused.status_code == 403, refused.text
        assert "another site" in refused.text
        assert not await mail.queues.is_paused("rb")
        # The dashboard's own page, and a script that names no page, are let through.
        own = await http.post("/api/queues/rb/pause",
                              headers={"X-CSRF-Token": token, "Origin": live_server})
        assert own.status_code == 200, own.text
        assert await mail.queues.is_paused("rb")
        script = await http.post("/api/queues/rb/resume", headers={"X-CSRF-Token": token})
        assert script.status_code == 200, script.text


@pytest.fixture
async def guarded(mail: MailManager) -> Starlette:
    settings = mail.settings.model_copy(update={"dashboard_auth": "admin:right-one"})
    app = create_app(settings, mail)
    app.state.mail, app.state.live_hub = mail, None
    return app


async def test_password_guessing_is_slowed_down(guarded: Starlette) -> None:
    transport = httpx.ASGITransport(app=guarded)
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as http:
        started = time.monotonic()
        for n in range(2000):
            answer = await http.get("/health", headers={"Authorization": basic("admin", f"g{n}")})
            statuses[answer.status_code] += 1
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1
        guessing_s = time.monotonic() - started
        # 10 free failures, then one more each time a block ends: within a few seconds of
        # guessing, a handful of guesses are looked at; every other is 429.
        assert statuses[401] <= 10 + 2 + guessing_s, (statuses, guessing_s)
        assert statuses[429] >= 2000 - statuses[401]
        # Blocked: the right password is not even looked at.
        right = {"Authorization": basic("admin", "right-one")}
        blocked = await http.get("/health", headers=right)
        assert blocked.status_code == 429 and "retry-after" in blocked.headers
        # After the wait it tells, the right password gets in (and clears the record).
        deadline = time.monotonic() + 60
        while (answer := await http.get("/health", headers=right)).status_code == 429:
            assert time.monotonic() < deadline, "still blocked after a minute"
            await asyncio.sleep(min(float(answer.headers["retry-after"]), 1.0))
        assert answer.status_code == 200
        print(f"\n[login-limit] 2,000 wrong passwords in {guessing_s:.1f} s: "
              f"{statuses[401]} looked at (401), {statuses[429]} refused unseen (429)")


async def test_a_first_visit_without_credentials_is_not_a_failed_guess(
        guarded: Starlette) -> None:
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as http:
        for _ in range(50):  # a browser asking before it shows the login box
            assert (await http.get("/health")).status_code == 401
        ok = await http.get("/health", headers={"Authorization": basic("admin", "right-one")})
        assert ok.status_code == 200


@pytest.mark.parametrize("referer_path", ["//evil.example/x", "/\\evil.example/x",
                                          "/\\/evil.example/x"])
async def test_after_an_action_the_redirect_stays_on_the_site(
        mail: MailManager, live_server: str, referer_path: str) -> None:
    await mail.create_queue("rb")
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as http:
        token = await csrf_of(http)
        answer = await http.post("/queues/rb/pause", data={"csrf_token": token},
                                 headers={"Referer": live_server + referer_path})
        assert answer.status_code == 303, answer.text
        location = answer.headers["location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        assert "evil.example" not in location
        # A same-site Referer is still where the operator goes back to.
        back = await http.post("/queues/rb/resume", data={"csrf_token": token},
                               headers={"Referer": live_server + "/queues/rb?state=failed"})
        assert back.headers["location"] == "/queues/rb?state=failed"


def test_credentials_over_plain_http_off_loopback_are_warned_about(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    dashboard = MailqueueProcess(tmp_path, ["dashboard", "--host", "0.0.0.0", "--port",
                                            str(free_port())],
                                 redis_url=redis_url, prefix=prefix,
                                 DASHBOARD_AUTH="admin:s3cret")
    try:
        dashboard.wait_for_output("Ctrl-C to stop", timeout=60)
    finally:
        assert dashboard.stop() == 0
    output = dashboard.output()
    assert re.search(r"Warning: the dashboard on 0\.0\.0\.0 is plain http: passwords and "
                     r"tokens cross the network in clear", output), output
    assert "s3cret" not in output
