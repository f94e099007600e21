"""Mail fixtures: a real SMTP sink under the test's prefix, a transport pointed at it, and the
DKIM tests' key pair and key file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job, Queue
from cryptography.hazmat.primitives.asymmetric import rsa

from mailqueue.bullmq_fixes import connection_options
from mailqueue.mail.sink import MailSink
from mailqueue.mail.transport import SmtpTransport
from tests.mailqueue.mail.dkim_support import private_pem


@pytest.fixture
async def transport(sink: MailSink) -> AsyncIterator[SmtpTransport]:
    smtp = SmtpTransport(sink.url + "&timeout=5")
    yield smtp
    await smtp.close()


@pytest.fixture
async def queue(redis_url: str, prefix: str) -> AsyncIterator[Queue]:
    q = Queue("emails", {"connection": connection_options(redis_url), "prefix": prefix})
    yield q
    await q.close()


async def add_job(queue: Queue, name: str, data: Any, **opts: Any) -> Job:
    return await queue.add(name, data, opts)


async def received(sink: MailSink, n: int = 50) -> list[EmailMessage]:
    """The sink's messages, oldest first, parsed with the modern policy (decoded headers)."""
    summaries = await sink.outbox.list_messages(n)
    parsed: list[EmailMessage] = []
    for summary in reversed(summaries):
        full = await sink.outbox.get_message(summary["id"])
        assert full is not None
        message = message_from_bytes(full["raw"].encode(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        parsed.append(message)
    return parsed


@pytest.fixture(scope="module")
def dkim_key() -> rsa.RSAPrivateKey:
    """The DKIM tests' RSA key pair, made once per module (2048 bits take a moment)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def dkim_key_file(dkim_key: rsa.RSAPrivateKey, tmp_path: Path) -> Path:
    """The key as an operator stores it: PKCS#8 PEM, readable by its owner alone."""
    path = tmp_path / "dkim.pem"
    path.write_bytes(private_pem(dkim_key))
    path.chmod(0o600)
    return path
