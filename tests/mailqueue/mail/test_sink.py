from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from mailqueue.mail.message import build_message, parse_address, parse_sender
from mailqueue.mail.outbox import Outbox, outbox_key
from mailqueue.mail.sink import MailSink, registered_sink_url, sink_key
from mailqueue.mail.transport import SmtpTransport

SENDER = parse_sender("Test <noreply@localhost>")


async def test_outbox_keeps_the_newest_messages_readable_from_any_client(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    sink = MailSink(redis_client, prefix, max_messages=5)
    async with sink:
        assert await registered_sink_url(redis_client, prefix) == sink.url
        smtp = SmtpTransport(sink.url)
        for i in range(8):
            await smtp.send(build_message(
                sender=SENDER, to=[parse_address(f"Ünï {i} <u{i}@example.com>")],
                subject=f"Nº {i}", text=f"text {i}", html=f"<p>html {i}</p>",
                message_id=f"<m{i}@localhost>",
            ))
        await smtp.close()
    assert await registered_sink_url(redis_client, prefix) is None

    # Another process: its own client, only the prefix in common.
    other = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        outbox = Outbox(other, prefix)
        assert await outbox.count() == 5
        listed = await outbox.list_messages(3)
        assert [m["subject"] for m in listed] == ["Nº 7", "Nº 6", "Nº 5"]
        assert listed[0]["to"] == "Ünï 7 <u7@example.com>"
        assert listed[0]["message_id"] == "<m7@localhost>"
        assert listed[0]["envelope_to"] == ["u7@example.com"]
        full = await outbox.get_message(listed[0]["id"])
        assert full is not None
        assert full["text"] == "text 7" and full["html"] == "<p>html 7</p>"
        assert ("Subject", "Nº 7") in full["headers"]
        assert "Message-ID: <m7@localhost>" in full["raw"]
        assert await outbox.get_message("0-1") is None
        assert await outbox.get_message("not-an-id") is None
    finally:
        await other.aclose()


async def test_sink_keys_are_not_mistaken_for_queues(prefix: str) -> None:
    for key in (outbox_key(prefix), sink_key(prefix)):
        assert key.startswith(f"{prefix}:__mailqueue__:")
        assert not key.endswith((":meta", ":id", ":events"))


async def test_each_sink_removes_only_its_own_registration(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """Two sinks on one prefix (two `mailqueue run`): the one that stops leaves the other."""
    first = await MailSink(redis_client, prefix).start()
    try:
        second = await MailSink(redis_client, prefix).start()
        assert await registered_sink_url(redis_client, prefix) in (first.url, second.url)
        await second.stop()
        assert await registered_sink_url(redis_client, prefix) == first.url
    finally:
        await first.stop()
    assert await registered_sink_url(redis_client, prefix) is None


async def test_a_lapsed_registration_is_not_found(redis_client: aioredis.Redis,
                                                  prefix: str) -> None:
    """A sink killed without unregistering (SIGKILL) stops renewing; it is then not found."""
    lapsed_ms = int(time.time() * 1000) - 1
    await redis_client.zadd(sink_key(prefix), {"smtp://127.0.0.1:9?starttls=false": lapsed_ms})
    assert await registered_sink_url(redis_client, prefix) is None
    async with MailSink(redis_client, prefix) as sink:
        assert await registered_sink_url(redis_client, prefix) == sink.url
        # Registering also drops the lapsed entries.
        assert await redis_client.zrange(sink_key(prefix), 0, -1) == [sink.url]


@pytest.fixture
def smtp_log() -> Iterator[logging.Logger]:
    """aiosmtpd's logger with no level of its own, as in a fresh process."""
    logger = logging.getLogger("mail.log")
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(logging.NOTSET)


@pytest.mark.parametrize(("level", "per_command_lines"), [("INFO", False), ("DEBUG", True)])
async def test_smtp_commands_are_logged_only_at_debug(
    redis_client: aioredis.Redis, prefix: str, smtp_log: logging.Logger,
    caplog: pytest.LogCaptureFixture, level: str, per_command_lines: bool,
) -> None:
    caplog.set_level(level)
    async with MailSink(redis_client, prefix, register=False) as sink:
        smtp = SmtpTransport(sink.url)
        await smtp.send(build_message(sender=SENDER, to=[parse_address("a@example.com")],
                                      subject="s", text="t", html=None))
        await smtp.close()
    commands = [r.getMessage() for r in caplog.records
                if r.name == "mail.log" and "MAIL FROM" in r.getMessage()]
    assert bool(commands) is per_command_lines, caplog.text
