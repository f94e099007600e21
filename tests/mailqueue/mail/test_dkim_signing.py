"""DKIM signing (issue 13, point 6): real messages through the handlers and a real SMTP sink,
each delivered message's signature verified by dkimpy against the public key, as a receiver
would; a message changed after signing fails, one a relay touches as relays do does not; the
key is read once, when the handlers are made.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import dkim
import pytest
from bullmq import Queue
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import parse_tag_value

from mailqueue.mail.dkim import message_signer
from mailqueue.mail.handlers import create_email_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.mail.transport import SmtpTransport
from mailqueue.settings import Settings
from tests.mailqueue.mail.dkim_support import (
    DOMAIN,
    SELECTOR,
    delivered,
    dkim_settings,
    dns_with,
    private_pem,
)


@pytest.fixture
def signing(settings: Settings, dkim_key_file: Path) -> Settings:
    return dkim_settings(settings, dkim_key_file)


@pytest.fixture
def handlers(signing: Settings, transport: SmtpTransport) -> Any:
    return create_email_handlers(signing, transport=transport)


def signature_tags(raw: bytes) -> dict[bytes, bytes]:
    first, _, _ = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"DKIM-Signature: "), first[:80]
    header = re.match(rb"DKIM-Signature: (.*?)\r\n(?! )", first + b"\r\n", re.S)
    assert header is not None
    return parse_tag_value(re.sub(rb"\r\n\s+", b" ", header.group(1)))


def signed_headers(raw: bytes) -> set[str]:
    return {h.strip().decode() for h in signature_tags(raw)[b"h"].split(b":")}


BASE = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}
MESSAGES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    # The lean writer's text + HTML alternative.
    "text and html": ("send-email", {
        "to": "bob@example.com", "subject": "Your invoice",
        "text": "Hello Bob,\nyour invoice is attached.\n", "html": "<p>Hello <b>Bob</b></p>",
    }, BASE),
    # RFC 2047 words in Subject, To, Cc and Reply-To; a base64 body.
    "non-ascii subject and names": ("send-welcome", {
        "to": "Zoë Ångström <zoe@example.com>", "name": "Zoë",
        "action_url": "https://app.example/start", "subject": "Grüße, Zoë 🌷",
        "cc": ["Çelik Öztürk <c@example.com>"], "reply_to": "Hélène <help@example.com>",
    }, BASE | {"cc", "reply-to"}),
    # The email package's path: multipart/mixed with a base64 attachment.
    "attachment": ("send-notification", {
        "to": "ops@example.com", "title": "Nightly report", "message": "Attached.",
        "attachments": [{"filename": "rapport-été.csv", "content": "a,b\n1,2\n" * 200}],
    }, BASE),
    # RFC 8058: both unsubscribe headers are signed (receivers require it for one-click).
    "newsletter": ("send-newsletter", {
        "to": "reader@example.com", "campaign": "Spring news",
        "articles": [{"title": "New pool", "summary": "Faster", "url": "https://x.example/1"}],
        "unsubscribe_url": "https://x.example/unsubscribe?u=1",
    }, BASE | {"list-unsubscribe", "list-unsubscribe-post"}),
}


@pytest.mark.parametrize("kind", sorted(MESSAGES))
async def test_each_delivered_message_carries_a_signature_that_verifies(
    kind: str, handlers: Any, queue: Queue, sink: MailSink, dkim_key: rsa.RSAPrivateKey
) -> None:
    name, data, headers = MESSAGES[kind]
    job = await queue.add(name, data, {})
    result = await handlers[name](data, job)
    assert result["accepted"]
    [raw] = await delivered(sink)
    dns = dns_with(dkim_key)
    assert dkim.verify(raw, dnsfunc=dns) is True
    assert dns.asked == [f"{SELECTOR}._domainkey.{DOMAIN}.".encode()]  # type: ignore[attr-defined]
    tags = signature_tags(raw)
    assert tags[b"a"] == b"rsa-sha256" and tags[b"c"] == b"relaxed/relaxed"
    assert (tags[b"d"], tags[b"s"]) == (DOMAIN.encode(), SELECTOR.encode())
    # Only the configured headers the message has: an absent Cc is not in h=.
    assert signed_headers(raw) == headers
    if kind == "attachment":
        assert b"multipart/mixed" in raw and b'filename*=utf-8' in raw


async def test_a_message_changed_after_signing_fails(
    handlers: Any, queue: Queue, sink: MailSink, dkim_key: rsa.RSAPrivateKey
) -> None:
    name, data, _ = MESSAGES["text and html"]
    await handlers[name](data, await queue.add(name, data, {}))
    [raw] = await delivered(sink)
    dns = dns_with(dkim_key)
    assert dkim.verify(raw, dnsfunc=dns) is True
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Hello Bob" in body
    changed = {
        "a word of the body": head + b"\r\n\r\n" + body.replace(b"Hello Bob", b"Hello Rob"),
        "a line added to the body": raw + b"P.S. wire the money elsewhere\r\n",
        "the subject": raw.replace(b"Subject: Your invoice", b"Subject: Your invoicE"),
        "the sender": raw.replace(b"news@example.com", b"news@examp1e.com"),
    }
    for what, tampered in changed.items():
        assert tampered != raw, what
        assert dkim.verify(tampered, dnsfunc=dns) is False, what
    # Another key published under the selector: the signature is not its.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert dkim.verify(raw, dnsfunc=dns_with(other)) is False
    # Nothing published at all.
    assert dkim.verify(raw, dnsfunc=dns_with(dkim_key, selector="other")) is False


async def test_relaxed_canonicalization_survives_what_relays_do(
    handlers: Any, queue: Queue, sink: MailSink, dkim_key: rsa.RSAPrivateKey
) -> None:
    """relaxed/relaxed: a relay that changes header case, refolds or pads with spaces, or
    adds an unsigned header, does not break the signature."""
    name, data, _ = MESSAGES["non-ascii subject and names"]
    await handlers[name](data, await queue.add(name, data, {}))
    [raw] = await delivered(sink)
    head, _, body = raw.partition(b"\r\n\r\n")
    relayed = (b"Received: from relay.example by mx.example; Thu, 1 Jan 2026 00:00:00 +0000"
               b"\r\n" + head.replace(b"\r\nSubject:", b"\r\nSUBJECT:  ")
               + b"\r\nX-Spam-Score: 0.1\r\n\r\n" + body.replace(b"\r\n", b"  \r\n"))
    assert dkim.verify(relayed, dnsfunc=dns_with(dkim_key)) is True


async def test_the_key_is_read_once_when_the_handlers_are_made(
    signing: Settings, dkim_key_file: Path, transport: SmtpTransport, queue: Queue, sink: MailSink,
    dkim_key: rsa.RSAPrivateKey
) -> None:
    handlers = create_email_handlers(signing, transport=transport)
    os.remove(dkim_key_file)  # jobs never read it: it was read and checked at start
    name, data, _ = MESSAGES["text and html"]
    for _ in range(3):
        await handlers[name](data, await queue.add(name, data, {}))
    raws = await delivered(sink)
    assert len(raws) == 3
    assert all(dkim.verify(raw, dnsfunc=dns_with(dkim_key)) for raw in raws)


def test_without_dkim_settings_messages_are_left_alone(settings: Settings) -> None:
    from mailqueue.mail.addresses import parse_address, parse_sender
    from mailqueue.mail.message import build_message

    message = build_message(sender=parse_sender("a@example.com"),
                            to=[parse_address("b@example.com")], subject="s", text="t",
                            html=None)
    assert message_signer(settings)(message) is message


def test_a_pkcs1_key_with_crlf_lines_signs_too(settings: Settings, tmp_path: Path,
                                                dkim_key: rsa.RSAPrivateKey) -> None:
    """`openssl genrsa` of OpenSSL 1.x and dknewkey write PKCS#1; Windows editors CRLF."""
    from mailqueue.mail.addresses import parse_address, parse_sender
    from mailqueue.mail.message import build_message

    path = tmp_path / "pkcs1.pem"
    pem = private_pem(dkim_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    path.write_bytes(pem.replace(b"\n", b"\r\n"))
    sign = message_signer(dkim_settings(settings, path, mail_dkim_headers="from subject"))
    message = sign(build_message(sender=parse_sender("a@example.com"),
                                 to=[parse_address("b@example.com")], subject="s", text="t",
                                 html=None))
    assert dkim.verify(message.data, dnsfunc=dns_with(dkim_key)) is True
    assert signed_headers(message.data) == {"from", "subject"}
