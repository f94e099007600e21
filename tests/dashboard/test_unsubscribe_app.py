"""The public one-click unsubscribe app (issue 13, point 3), to RFC 8058's text, against the
suite's Redis: mailqueue.dashboard.unsubscribe.

RFC 8058 section 3.1: the List-Unsubscribe URI is https and names the recipient; section
3.2: the receiver POSTs `List-Unsubscribe=One-Click` (multipart/form-data or
application/x-www-form-urlencoded), without cookies; a GET must not unsubscribe, since
mail software fetches URLs from messages by itself.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from mailqueue.dashboard.unsubscribe import CONTENT_SECURITY_POLICY, create_unsubscribe_app
from mailqueue.mail.handlers import create_email_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.mail.unsubscribe import (
    UnsubscribeSettingsError,
    make_token,
    unsubscribe_url,
)
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.mailqueue.mail.conftest import received

SECRET = "a-long-random-secret-for-tests"
PUBLIC = "https://news.example.org/u"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
ADA = "ada.lovelace@example.com"


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    """The suite's settings, with one-click unsubscribe configured."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url, queue_prefix=prefix, data_dir=tmp_path / "data",
        job_backoff_delay_ms=100,
        mail_unsubscribe_url=PUBLIC, mail_unsubscribe_secret=SECRET,
    )


@pytest.fixture
def unsub(settings: Settings, mail: MailManager) -> Starlette:
    return create_unsubscribe_app(settings, mail)


@pytest.fixture
async def client(unsub: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=unsub)
    async with httpx.AsyncClient(transport=transport, base_url="https://news.example.org"
                                 ) as c:
        yield c


def path_for(settings: Settings, address: str = ADA) -> str:
    return "/" + unsubscribe_url(settings, address).rsplit("/", 1)[1]


async def suppressed(mail: MailManager, address: str = ADA) -> Any:
    return await mail.desk.suppressions.get(address)


def multipart(boundary: str, delimiter: str | None = None) -> tuple[bytes, dict[str, str]]:
    line = delimiter or f"--{boundary}"
    body = (f'{line}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            f"One-Click\r\n{line}--\r\n")
    return body.encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def assert_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    csp = headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp  # no script at all
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"  # the token is in the URL
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in headers


# --- POST: the one-click itself -------------------------------------------------------------


async def test_one_click_post_urlencoded_suppresses_and_answers_200_twice(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager
) -> None:
    path = path_for(settings, "Ada.Lovelace@Example.com")
    # RFC 8058 section 8.1: exactly these 26 bytes.
    first = await client.post(path, content=b"List-Unsubscribe=One-Click", headers={
        "content-type": "application/x-www-form-urlencoded"})
    assert first.status_code == 200 and "unsubscribed" in first.text
    assert_security_headers(first)
    entry = await suppressed(mail)
    assert entry is not None and entry.reason == "unsubscribe" and entry.by == "unsubscribe"
    # Idempotent: again 200, the first entry kept, one address counted.
    again = await client.post(path, data=ONE_CLICK)
    assert again.status_code == 200
    assert await suppressed(mail) == entry
    counts = await mail.desk.suppressions.counts()
    assert counts["unsubscribe"] == 1


@pytest.mark.parametrize(("boundary", "delimiter"), [
    ("-FormBoundaryjWmhtjORrn", None),  # RFC 8058 section 8.3 with erratum 5117
    ("---FormBoundaryjWmhtjORrn", "---FormBoundaryjWmhtjORrn"),  # as the RFC prints it
    ("----WebKitFormBoundary7MA4YWxkTrZu0gW", None),  # a browser's
])
async def test_one_click_post_multipart_suppresses_and_answers_200(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager, boundary: str,
    delimiter: str | None,
) -> None:
    body, headers = multipart(boundary, delimiter)
    response = await client.post(path_for(settings), content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert (await suppressed(mail)) is not None
    assert (await client.post(path_for(settings), content=body, headers=headers)
            ).status_code == 200


async def test_the_post_must_say_list_unsubscribe_one_click(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager
) -> None:
    path = path_for(settings)
    for kwargs in (
        {},  # no body
        {"data": {"List-Unsubscribe": "Yes"}},
        {"data": {"list-unsubscribe": "One-Click"}},
        {"content": b"List-Unsubscribe=One-Click", "headers": {"content-type": "text/plain"}},
        {"json": ONE_CLICK},
        {"content": b"x" * 20_000,
         "headers": {"content-type": "application/x-www-form-urlencoded"}},
        {"files": {"List-Unsubscribe": ("a.txt", b"One-Click")}},  # a file, not a field
    ):
        response = await client.post(path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code in (400, 413, 415), (kwargs, response.status_code)
        assert_security_headers(response)
    assert await suppressed(mail) is None


async def test_no_cookie_and_no_csrf_token_are_needed_nor_set(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager
) -> None:
    # A mail provider's POST carries no cookie and no Origin of ours (RFC 8058 section 3.2).
    response = await client.post(path_for(settings), data=ONE_CLICK,
                                 headers={"origin": "https://mail.provider.example"})
    assert response.status_code == 200 and "set-cookie" not in response.headers
    assert not client.cookies
    assert await suppressed(mail) is not None


# --- GET: a confirmation page, never an unsubscribe -----------------------------------------


async def test_a_get_alone_suppresses_nothing_and_shows_a_confirmation_form(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager
) -> None:
    path = path_for(settings)
    for _ in range(3):  # a scanner, a link preview, the reader
        page = await client.get(path)
        assert page.status_code == 200
        assert (await client.head(path)).status_code == 200
    assert await suppressed(mail) is None
    html = page.text
    assert "a**********e@example.com" in html and ADA not in html  # partly masked
    # The button POSTs the same form to the same URL (no action: wherever it is mounted).
    assert '<form method="post">' in html
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in html
    assert "<script" not in html.lower()
    assert_security_headers(page)
    assert page.headers["content-type"].startswith("text/html")


async def test_the_confirmation_page_button_unsubscribes(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager
) -> None:
    # As a browser does: the form read back from the page, and submitted to the page's URL.
    path = path_for(settings)
    page = (await client.get(path)).text
    form = re.search(r'<form method="(\w+)">.*?name="([^"]+)" value="([^"]+)"', page)
    assert form is not None
    method, name, value = form.groups()
    done = await client.request(method.upper(), path, data={name: value})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert (await suppressed(mail)) is not None


# --- refused tokens ---------------------------------------------------------------------------


def refused_tokens(settings: Settings) -> Iterator[tuple[str, str]]:
    good = path_for(settings)[1:]
    payload, mac = good.split(".")
    yield "forged", make_token("not-the-secret-of-this-server", ADA, expires=2_000_000_000)
    yield "expired", make_token(SECRET, ADA, expires=int(time.time()) - 1)
    other = path_for(settings, "eve@example.com")[1:].split(".")[0]
    yield "altered", f"{other}.{mac}"
    flipped = "B" if mac[5] != "B" else "C"
    yield "altered", f"{payload}.{mac[:5]}{flipped}{mac[6:]}"
    yield "malformed", f"{payload}.{mac[:-3]}"
    yield "malformed", "not-a-token-at-all-but-long-enough.x"
    yield "malformed", "%3Cscript%3Ealert(1)%3C-script%3E.x"


async def test_forged_expired_altered_and_malformed_tokens_are_400_with_one_line(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager
) -> None:
    reasons = {"forged": "signature does not match", "altered": "signature does not match",
               "expired": "expired", "malformed": "incomplete or damaged"}
    for kind, token in refused_tokens(settings):
        for response in (await client.get(f"/{token}"),
                         await client.post(f"/{token}", data=ONE_CLICK)):
            assert response.status_code == 400, (kind, token, response.status_code)
            text = response.text
            assert reasons[kind] in text or (kind == "malformed" and "not a valid" in text)
            assert "Traceback" not in text and "<script" not in text.lower()
            assert token not in text  # nothing of the request is echoed
            assert_security_headers(response)
    assert await mail.desk.suppressions.count() == 0


# --- nothing of the dashboard -----------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/", "/queues", "/api/queues", "/health", "/metrics", "/workers", "/events", "/outbox",
    "/live", "/static/app.css", "/queues/emails", "/api/events/stream", "/favicon.ico",
    "/jobs/find",
])
async def test_nothing_of_the_dashboard_is_reachable(
    client: httpx.AsyncClient, mail: MailManager, path: str
) -> None:
    await mail.create_queue("emails")
    response = await client.get(path)
    assert response.status_code == 404, (path, response.status_code)
    assert_security_headers(response)
    posted = await client.post(path, data=ONE_CLICK)
    assert posted.status_code in (404, 405)


async def test_a_dashboard_action_cannot_be_posted(
    client: httpx.AsyncClient, mail: MailManager
) -> None:
    await mail.create_queue("emails")
    for path in ("/queues/emails/pause", "/api/queues/emails/pause", "/queues/pause-all"):
        assert (await client.post(path)).status_code in (404, 405)
    assert not await mail.queues.is_paused("emails")


async def test_only_get_head_and_post(client: httpx.AsyncClient, settings: Settings) -> None:
    path = path_for(settings)
    for method in ("PUT", "DELETE", "PATCH"):
        assert (await client.request(method, path)).status_code == 405


async def test_redis_away_is_a_503_not_a_trace(
    client: httpx.AsyncClient, settings: Settings, mail: MailManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def gone(*args: Any, **kwargs: Any) -> bool:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(mail.desk.suppressions, "add", gone)
    response = await client.post(path_for(settings), data=ONE_CLICK)
    assert response.status_code == 503 and "nothing changed" in response.text
    assert "6379" not in response.text and "Traceback" not in response.text


def test_the_app_refuses_to_start_without_the_secret(redis_url: str) -> None:
    with pytest.raises(UnsubscribeSettingsError, match="MAIL_UNSUBSCRIBE_SECRET"):
        create_unsubscribe_app(Settings(_env_file=None, redis_url=redis_url))  # type: ignore[call-arg]


# --- mounted in a user's own app ----------------------------------------------------------------


async def test_mounted_in_another_app_under_a_prefix_with_its_own_redis(
    settings: Settings, mail: MailManager
) -> None:
    unsubscribe = create_unsubscribe_app(settings)  # opens its own MailManager

    async def home(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("the user's own app")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Starlette runs no mounted app's lifespan: the parent runs it (docs/mail.md).
        async with unsubscribe.router.lifespan_context(unsubscribe):
            yield

    parent = Starlette(routes=[Route("/", home), Mount("/u", unsubscribe)], lifespan=lifespan)
    token = path_for(settings)
    async with parent.router.lifespan_context(parent):
        transport = httpx.ASGITransport(app=parent)
        async with httpx.AsyncClient(transport=transport, base_url="https://x.example") as c:
            assert (await c.get("/")).text == "the user's own app"
            assert (await c.get(f"/u{token}")).status_code == 200
            assert (await c.post(f"/u{token}", data=ONE_CLICK)).status_code == 200
            assert (await c.get("/u/queues")).status_code == 404
    assert (await suppressed(mail)) is not None

    # Mounted without running its lifespan: it opens Redis at the first request all the same.
    lazy = create_unsubscribe_app(settings)
    bare = Starlette(routes=[Mount("/u", lazy)])
    transport = httpx.ASGITransport(app=bare)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://x.example") as c:
            response = await c.post(f"/u{path_for(settings, 'bob@example.com')}",
                                    data=ONE_CLICK)
            assert response.status_code == 200
    finally:
        async with lazy.router.lifespan_context(lazy):
            pass  # closes what the first request opened
    assert (await suppressed(mail, "bob@example.com")) is not None


# --- end to end: a newsletter through a worker, its header, the POST, the next one ---------------


async def test_end_to_end_newsletter_header_post_then_suppressed(
    settings: Settings, mail: MailManager, sink: MailSink
) -> None:
    handlers = create_email_handlers(settings.model_copy(update={"smtp_url": sink.url}))
    await mail.create_queue("emails")
    mail.start_worker("emails", handlers, concurrency=2)
    try:
        first = await _run(mail, "send-newsletter",
                           {"to": "Grace Hopper <Grace@Example.com>", "campaign": "March"})
        assert first["state"] == "completed"
        assert first["return_value"]["accepted"] == ["Grace@example.com"]
        (delivered,) = await received(sink)
        header = delivered["List-Unsubscribe"]
        assert header.startswith(f"<{PUBLIC}/") and header.endswith(">")
        assert delivered["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        # The mail provider POSTs to that URL: here, the app mounted at the URL's path.
        url = httpx.URL(header[1:-1])
        assert url.scheme == "https" and url.path.startswith("/u/")
        parent = Starlette(routes=[Mount("/u", create_unsubscribe_app(settings, mail))])
        transport = httpx.ASGITransport(app=parent)
        async with httpx.AsyncClient(transport=transport, base_url=f"https://{url.host}"
                                     ) as provider:
            assert (await provider.get(url.path)).status_code == 200  # a scanner: nothing
            assert (await suppressed(mail, "grace@example.com")) is None
            response = await provider.post(url.path, content=b"List-Unsubscribe=One-Click",
                                           headers={"content-type":
                                                    "application/x-www-form-urlencoded"})
            assert response.status_code == 200
        entry = await suppressed(mail, "grace@example.com")
        assert entry is not None and entry.reason == "unsubscribe"

        second = await _run(mail, "send-newsletter",
                            {"to": "grace@example.com", "campaign": "April"})
        assert second["state"] == "completed"
        result = second["return_value"]
        assert result["outcome"] == "suppressed" and result["accepted"] == []
        assert result["suppressed"] == {"grace@example.com": "unsubscribe"}
        assert len(await received(sink)) == 1  # nothing more was sent
    finally:
        await mail.stop_worker("emails")
        await handlers.close()


async def _run(mail: MailManager, name: str, data: dict[str, Any]) -> dict[str, Any]:
    job = await mail.add_job("emails", name, data)
    deadline = time.monotonic() + 30
    while True:
        info = await mail.queues.get_job("emails", str(job.id))
        if info["state"] in ("completed", "failed"):
            return info
        assert time.monotonic() < deadline, info["state"]
        await asyncio.sleep(0.05)
