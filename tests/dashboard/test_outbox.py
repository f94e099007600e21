"""The outbox: messages from the real development sink, a sandboxed HTML part, escaping."""

from __future__ import annotations

import re
from email.message import EmailMessage

import aiosmtplib
import httpx

from mailqueue.manager import MailManager

EVIL_SUBJECT = '<script>alert("subject")</script>'
EVIL_HTML = ('<html><body><h1>Hi</h1><script>alert("html")</script>'
             '<img src=x onerror=alert(1)></body></html>')


async def _send(mail: MailManager) -> None:
    sink = await mail.start_dev_sink()
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "ada@example.com"
    message["Subject"] = EVIL_SUBJECT
    message.set_content("Hello Ada, plain text part.")
    message.add_alternative(EVIL_HTML, subtype="html")
    await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)


async def test_outbox_lists_messages_escaped(client: httpx.AsyncClient, mail: MailManager
                                             ) -> None:
    await _send(mail)
    page = await client.get("/outbox")
    assert page.status_code == 200
    assert "development sink receives" in page.text
    assert "app@example.com" in page.text and "ada@example.com" in page.text
    assert EVIL_SUBJECT not in page.text and "&lt;script&gt;alert" in page.text

    api = (await client.get("/api/outbox")).json()
    assert api["sink"]["active"] is True and api["total"] == 1
    summary = api["messages"][0]
    assert summary["subject"] == EVIL_SUBJECT and summary["from"] == "app@example.com"


async def test_message_page_frames_the_html_in_a_sandbox(
    client: httpx.AsyncClient, mail: MailManager
) -> None:
    await _send(mail)
    message_id = (await mail.outbox.list_messages(1))[0]["id"]
    page = await client.get(f"/outbox/{message_id}")
    assert page.status_code == 200
    iframe = re.search(r"<iframe[^>]*>", page.text)
    assert iframe, page.text
    tag = iframe.group(0)
    assert re.search(r"\ssandbox[\s>]", tag)
    assert "allow-scripts" not in tag and "allow-same-origin" not in tag
    assert f'/outbox/{message_id}/html"' in tag
    assert "Hello Ada, plain text part." in page.text
    assert "Subject" in page.text and "Content-Type" in page.text  # the headers
    assert '<script>alert("html")' not in page.text and EVIL_SUBJECT not in page.text
    assert "frame-src 'self'" in page.headers["content-security-policy"]

    part = await client.get(f"/outbox/{message_id}/html")
    assert part.status_code == 200 and part.headers["content-type"].startswith("text/html")
    csp = part.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
    assert "sandbox" in csp.split(";")[-1] and "script-src" not in csp
    assert part.headers["x-frame-options"] == "SAMEORIGIN"
    assert "<h1>Hi</h1>" in part.text  # served as is, made harmless by CSP and sandbox

    api = (await client.get(f"/api/outbox/{message_id}")).json()
    assert api["text"].strip() == "Hello Ada, plain text part."
    assert api["html"].strip() == EVIL_HTML


async def test_unknown_message_and_sink_not_in_use(client: httpx.AsyncClient,
                                                   mail: MailManager) -> None:
    page = await client.get("/outbox")
    assert "The development sink is not running" in page.text
    assert "The outbox is empty." in page.text
    assert (await client.get("/outbox/1-0")).status_code == 404
    assert (await client.get("/outbox/not-an-id")).status_code == 404
    assert (await client.get("/outbox/1-0/html")).status_code == 404
    assert (await client.get("/api/outbox/1-0")).status_code == 404
    assert (await client.get("/api/outbox")).json()["sink"]["active"] is False
