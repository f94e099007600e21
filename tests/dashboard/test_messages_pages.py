"""/messages (issue 13, point 1): the delivery log searched by address, @domain or Message-ID,
filtered, paged; one entry's page with its outbox copy and other attempts; a job's messages;
their JSON twins; one-line 400s; everything untrusted escaped.

The entries come through the real path (a worker sends to the development sink over SMTP,
the first attempt refused with a 451) or, for shapes the path does not make on demand, from
MessageLog.write.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from mailqueue.desk_query import classify, parse_time
from mailqueue.mail.handlers import create_email_handlers
from mailqueue.mail.message_log import Attempt, LogEntry
from mailqueue.manager import MailManager
from tests.dashboard.test_job_page import job_url

QUEUE = "emails"
EVIL = "<img src=x onerror=alert(1)>"
RESET = {"to": "Ada <Ada@Example.com>", "name": "Ada", "reset_url": "https://x.example/r"}


@pytest.fixture
async def sent(mail: MailManager) -> AsyncIterator[dict[str, Any]]:
    """Ada's reset e-mail (deferred once by a 451, then sent) and Bob's notification, sent
    by a worker to the development sink."""
    sink = await mail.start_dev_sink()
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    mail.start_worker(QUEUE, handlers, concurrency=2)
    try:
        sink.fail_recipient("ada@example.com", 451, times=1)
        reset = await run(mail, "send-reset-password", RESET, attempts=3,
                          backoff={"type": "fixed", "delay": 50})
        note = await run(mail, "send-notification",
                         {"to": "bob@example.com", "title": "Disk full", "message": "Free it"})
        yield {"reset": reset, "note": note}
    finally:
        await mail.stop_worker(QUEUE)
        await handlers.close()


async def run(mail: MailManager, name: str, data: dict[str, Any], **opts: Any
              ) -> dict[str, Any]:
    job = await mail.add_job(QUEUE, name, data, **opts)
    deadline = time.monotonic() + 30
    while True:
        info = await mail.queues.get_job(QUEUE, str(job.id))
        if info["state"] in ("completed", "failed"):
            assert info["state"] == "completed", info["failed_reason"]
            return info
        assert time.monotonic() < deadline, info["state"]
        await asyncio.sleep(0.05)


async def write(mail: MailManager, *entries: tuple[LogEntry, Attempt]) -> list[str]:
    return await mail.desk.messages.write(list(entries))


def rows(page: httpx.Response) -> list[str]:
    body = page.text.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in page.text \
        else ""
    return re.findall(r"<tr>.*?</tr>", body, re.S)


async def test_did_ada_get_her_reset_email(client: httpx.AsyncClient, mail: MailManager,
                                           sent: dict[str, Any]) -> None:
    reset = sent["reset"]
    page = await client.get("/messages", params={"q": "ADA@example.com"})
    assert page.status_code == 200
    found = rows(page)
    assert len(found) == 2  # newest first: sent, then the deferred first attempt
    assert "state-completed" in found[0] and ">sent<" in found[0]
    assert "state-delayed" in found[1] and ">deferred<" in found[1]
    assert "250 Message accepted" in found[0] and "<code>451</code>" in found[1]
    assert "reset-password" in found[0] and "Ada@example.com" in found[0]
    assert f'href="{job_url(QUEUE, reset["id"])}"' in found[0]
    assert "for recipient ADA@example.com" in html.unescape(page.text)
    assert "Time (UTC)" in page.text  # the column says the zone
    assert 'aria-current="page"' in page.text  # the nav's Messages link

    api = (await client.get("/api/messages", params={"q": "@example.com"})).json()
    assert api["searched"] == {"kind": "domain", "value": "@example.com"}
    assert {r for e in api["entries"] for r in e["recipients"]} == {"Ada@example.com",
                                                                  "bob@example.com"}
    message_id = reset["return_value"]["message_id"]
    for text in (message_id, message_id.strip("<>")):  # emails.1@localhost: no dotted domain
        by_id = (await client.get("/api/messages", params={"q": text})).json()
        assert by_id["searched"]["kind"] == "message_id"
        assert [e["outcome"] for e in by_id["entries"]] == ["sent", "deferred"]
    assert (await client.get("/api/messages", params={"message_id": message_id})
            ).json()["entries"] == by_id["entries"]


async def test_an_entry_page_links_its_job_outbox_copy_and_other_attempts(
    client: httpx.AsyncClient, mail: MailManager, sent: dict[str, Any]
) -> None:
    entries = (await client.get("/api/messages", params={"to": "ada@example.com"})
               ).json()["entries"]
    newest, first = entries
    page = await client.get(f"/messages/{newest['id']}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert newest["subject"] in text and newest["message_id"] in text
    assert f'href="{job_url(QUEUE, newest["job_id"])}"' in page.text
    outbox_id = (await mail.outbox.list_messages(10))[-1]["id"]  # Ada's, the first received
    assert f'href="http://127.0.0.1:3000/outbox/{outbox_id}"' in page.text
    assert f"/messages/{first['id']}" in page.text  # the other attempt, listed
    assert "Per recipient" in page.text and "Ada@example.com" in text  # its RCPT replies
    api = (await client.get(f"/api/messages/{newest['id']}")).json()
    assert api["outbox_id"] == outbox_id and api["outbox_url"] == f"/outbox/{outbox_id}"
    assert [a["id"] for a in api["other_attempts"]] == [first["id"]]
    assert api["replies"] and api["code"] == 250 and api["attempt"] == 2
    # The deferred attempt was never received: no outbox copy.
    deferred = (await client.get(f"/api/messages/{first['id']}")).json()
    assert deferred["outbox_id"] is None and "451" in deferred["reply"]
    for missing in ("1-0", "not-an-id"):
        assert (await client.get(f"/messages/{missing}")).status_code == 404
        assert (await client.get(f"/api/messages/{missing}")).status_code == 404


async def test_the_job_page_lists_the_jobs_messages(client: httpx.AsyncClient, mail: MailManager,
                                                    sent: dict[str, Any]) -> None:
    job_id = sent["reset"]["id"]
    page = await client.get(job_url(QUEUE, job_id))
    assert page.status_code == 200
    section = f'hx-get="{job_url(QUEUE, job_id, "/messages")}"'
    assert 'id="job-messages"' in page.text and section in page.text
    fragment = await client.get(job_url(QUEUE, job_id, "/messages"),
                                headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert len(rows(fragment)) == 2 and ">sent<" in fragment.text
    # Without script: the job's messages on /messages.
    plain = await client.get(job_url(QUEUE, job_id, "/messages"))
    assert plain.status_code == 303
    message_id = sent["reset"]["return_value"]["message_id"]
    assert plain.headers["location"] == f"/messages?message_id={quote(message_id, safe='')}"
    api = (await client.get(job_url(QUEUE, job_id, "/messages", api=True))).json()
    assert api["message_id"] == message_id and len(api["entries"]) == 2
    other = await client.get(job_url(QUEUE, sent["note"]["id"], "/messages"),
                             headers={"HX-Request": "true"})
    assert len(rows(other)) == 1 and "bob@example.com" in other.text


async def test_filters_and_older_pages(client: httpx.AsyncClient, mail: MailManager) -> None:
    for n in range(7):
        outcome = ("sent", "deferred", "failed", "suppressed")[n % 4]
        await write(mail, (LogEntry(outcome, [f"u{n}@example.org"], 250 if n % 4 == 0 else 550,
                                    f"reply {n}"),
                           Attempt(f"<q.{n}@example.org>", "q", str(n), 1,
                                   "welcome" if n % 2 else "newsletter", f"Subject {n}")))
    failed = (await client.get("/api/messages", params={"outcome": "failed"})).json()
    assert [e["job_id"] for e in failed["entries"]] == ["6", "2"]
    welcome = (await client.get("/api/messages", params={"template": "welcome"})).json()
    assert [e["job_id"] for e in welcome["entries"]] == ["5", "3", "1"]
    recent = (await client.get("/api/messages", params={"since": "24h"})).json()
    assert len(recent["entries"]) == 7
    long_ago = await client.get("/messages", params={"since": "2001-01-01",
                                                     "until": "2001-01-02"})
    assert long_ago.status_code == 200 and "No entry" in long_ago.text
    # Three a page; "Older" follows the cursor with the filters, no entry twice.
    seen: list[str] = []
    path = "/messages?q=%40example.org&limit=3"
    while path:
        page = await client.get(path if path.startswith("/") else "/messages" + path)
        assert page.status_code == 200
        seen += re.findall(r"Subject (\d)", page.text)
        older = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        path = html.unescape(older.group(1)) if older else ""
        if path:
            assert "before=" in path and "to=%40example.org" in path
    assert seen == ["6", "5", "4", "3", "2", "1", "0"]


@pytest.mark.parametrize(("params", "reason"), [
    ({"outcome": "bounced"}, "outcome must be one of sent, deferred, failed, suppressed"),
    ({"since": "yesterday"}, "since must be a span like 24h or 7d"),
    ({"until": "2026-13-45"}, "until must be a span like 24h or 7d"),
    ({"since": "2026-12-02", "until": "2026-12-01"}, "since must come before until"),
    ({"before": "x"}, "before must be an entry id"),
    ({"q": "a b@example.com"}, "search for an address, an @domain or a Message-ID, without"),
    ({"to": "a b@example.com"}, "search for an address, an @domain or a Message-ID, without"),
    ({"limit": "0"}, "limit must be between 1 and 500"),
    ({"limit": "ten"}, "limit must be a whole number"),
    ({"to": "<a@b>"}, "to must be an address or @domain"),
])
async def test_a_bad_filter_is_a_400_with_one_line(client: httpx.AsyncClient,
                                                   params: dict[str, str], reason: str) -> None:
    api = await client.get("/api/messages", params=params)
    assert api.status_code == 400
    assert api.json()["error"].startswith(reason) and "\n" not in api.json()["error"]
    page = await client.get("/messages", params=params)
    assert page.status_code == 400
    assert html.unescape(page.text).count(reason) == 1
    assert 'role="alert"' in page.text and 'name="q"' in page.text  # the form stays


async def test_untrusted_text_is_escaped_everywhere(client: httpx.AsyncClient,
                                                    mail: MailManager) -> None:
    [entry_id] = await write(mail, (
        LogEntry("failed", ["eve@example.com"], 550, f"550 {EVIL} <script>x</script>",
                 replies={"eve@example.com": f"550 {EVIL}"}),
        Attempt(f"<{EVIL}@x>", QUEUE, f"job{EVIL}", 1, f"t{EVIL}", EVIL)))
    await mail.add_job(QUEUE, "send-notification", {"to": "eve@example.com"},
                       jobId=f"job{EVIL}")
    pages = [(await client.get("/messages"), 200),
             (await client.get(f"/messages/{entry_id}"), 200),
             (await client.get("/messages", params={"template": f"t{EVIL}"}), 200),
             # Spaces: no Message-ID; the 400 page keeps the text in the box, escaped.
             (await client.get("/messages", params={"q": f"<{EVIL}@x>"}), 400)]
    for page, status in pages:
        assert page.status_code == status
        assert EVIL not in page.text and "<script>x" not in page.text
        assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert (await client.get(f"/api/messages/{entry_id}")).json()["subject"] == EVIL


def test_the_search_box_reads_the_texts_shape() -> None:
    assert classify("ada@example.com") == ("address", "ada@example.com")
    assert classify(" @example.com ") == ("domain", "@example.com")
    assert classify("example.com") == ("domain", "@example.com")
    assert classify("<emails.1@localhost>") == ("message_id", "<emails.1@localhost>")
    assert classify("emails.1@localhost") == ("message_id", "emails.1@localhost")
    assert classify("") == ("", "")
    now = 1_800_000_000_000
    assert parse_time("24h", "since", now_ms=now) == now - 86_400_000
    assert parse_time("90 min", "since", now_ms=now) == now - 5_400_000
    assert parse_time("2026-12-01", "since") == 1_796_083_200_000
    assert parse_time("2026-12-01", "until", end_of_day=True) == 1_796_169_599_999
    assert parse_time("2026-12-01T08:30Z", "since") == 1_796_113_800_000


async def test_an_address_like_message_id_is_found_when_no_recipient_has_it(
    client: httpx.AsyncClient, mail: MailManager
) -> None:
    await write(mail, (LogEntry("sent", ["zed@example.com"], 250, "250 OK"),
                       Attempt("<news.7@mail.example.com>", "news", "7", 1, None, "Hi")))
    api = (await client.get("/api/messages", params={"q": "news.7@mail.example.com"})).json()
    assert api["searched"] == {"kind": "message_id", "value": "news.7@mail.example.com"}
    assert [e["job_id"] for e in api["entries"]] == ["7"]
