from __future__ import annotations

import asyncio

import pytest

from mailqueue.mail.errors import PermanentDeliveryError, TransientDeliveryError
from mailqueue.mail.message import OutgoingMessage, build_message, parse_address, parse_sender
from mailqueue.mail.sink import MailSink
from mailqueue.mail.transport import SmtpTransport
from mailqueue.smtp_url import SmtpConfig

from .conftest import received

SENDER = parse_sender("Test <noreply@localhost>")


def message(*to: str, subject: str = "Hello", mid: str | None = None) -> OutgoingMessage:
    return build_message(sender=SENDER, to=[parse_address(a) for a in to], subject=subject,
                         text="text", html="<p>html</p>", message_id=mid)


def test_smtp_url_parsing() -> None:
    c = SmtpConfig.from_url("smtp://us%40er:p%3Ass@mail.example.com:587?starttls=true&timeout=5")
    assert (c.host, c.port, c.username, c.password) == ("mail.example.com", 587, "us@er", "p:ss")
    assert c.start_tls is True and c.use_tls is False and c.timeout == 5
    assert "p:ss" not in repr(c) and "p%3Ass" not in c.redacted_url()
    s = SmtpConfig.from_url("smtps://u:p@mail.example.com")
    assert s.use_tls and s.port == 465 and s.start_tls is False
    plain = SmtpConfig.from_url("smtp://localhost?starttls=false&pool=2")
    assert plain.port == 25 and plain.start_tls is False and plain.pool_size == 2
    assert SmtpConfig.from_url("smtp://h").start_tls is None  # when offered
    for bad in ("http://h", "smtp://", "smtps://h?starttls=true", "smtp://h?starttls=maybe",
                "smtp://h?timeout=0"):
        with pytest.raises(ValueError):
            SmtpConfig.from_url(bad)


async def test_send_over_a_real_smtp_conversation(sink: MailSink,
                                                  transport: SmtpTransport) -> None:
    result = await transport.send(message("Zoë <zoe@example.com>", subject="Ça marche"))
    assert result.accepted == ["zoe@example.com"] and result.rejected == {}
    assert result.response.startswith("250")
    [got] = await received(sink)
    assert str(got["Subject"]) == "Ça marche"
    assert got["To"].addresses[0].display_name == "Zoë"


async def test_the_pool_reuses_at_most_pool_size_connections(
    sink: MailSink, transport: SmtpTransport
) -> None:
    await asyncio.gather(*(transport.send(message(f"u{i}@example.com")) for i in range(30)))
    assert transport.connections_opened <= transport.pool_size
    assert await sink.outbox.count() == 30


async def test_server_down_is_transient_then_up_succeeds(
    sink: MailSink, transport: SmtpTransport
) -> None:
    await transport.send(message("a@example.com"))  # a pooled connection now exists
    await sink.stop()
    with pytest.raises(TransientDeliveryError):
        await transport.send(message("b@example.com"))
    await sink.start()  # same port
    result = await transport.send(message("c@example.com"))
    assert result.accepted == ["c@example.com"]


async def test_a_connection_dropped_while_idle_is_replaced(
    sink: MailSink, transport: SmtpTransport
) -> None:
    await transport.send(message("a@example.com"))
    await sink.stop()
    await sink.start()
    # The pooled connection is dead; the send reconnects without an error.
    result = await transport.send(message("b@example.com"))
    assert result.accepted == ["b@example.com"]
    assert transport.connections_opened == 2
    assert await sink.outbox.count() == 2


async def test_refused_connection_is_transient() -> None:
    closed = SmtpTransport("smtp://127.0.0.1:1?starttls=false&timeout=2")
    with pytest.raises(TransientDeliveryError, match="cannot reach"):
        await closed.send(message("a@example.com"))


async def test_550_is_permanent_and_4xx_transient(sink: MailSink,
                                                   transport: SmtpTransport) -> None:
    sink.fail_recipient("gone@example.com", 550)
    with pytest.raises(PermanentDeliveryError) as info:
        await transport.send(message("gone@example.com"))
    assert info.value.code == 550
    sink.fail_recipient("busy@example.com", 451, times=1)
    with pytest.raises(TransientDeliveryError) as transient:
        await transport.send(message("busy@example.com"))
    assert transient.value.code == 451
    assert (await transport.send(message("busy@example.com"))).accepted == ["busy@example.com"]
    sink.fail_recipient("closing@example.com", 421, times=1)
    with pytest.raises(TransientDeliveryError):
        await transport.send(message("closing@example.com"))
    # The pool recovers from the closed session.
    assert (await transport.send(message("ok@example.com"))).accepted == ["ok@example.com"]
    assert await sink.outbox.count() == 2


async def test_one_refused_recipient_among_several(sink: MailSink,
                                                    transport: SmtpTransport) -> None:
    sink.fail_recipient("gone@example.com", 550)
    result = await transport.send(message("ok@example.com", "gone@example.com"))
    assert result.accepted == ["ok@example.com"]
    assert result.rejected["gone@example.com"].startswith("550")
    [got] = await received(sink)
    assert got["To"] is not None  # the header still names both; the envelope had one
    full = (await sink.outbox.list_messages(1))[0]
    assert full["envelope_to"] == ["ok@example.com"]


async def test_a_slow_reply_to_the_message_is_waited_for_not_sent_again(sink: MailSink) -> None:
    # The per-command timeout is 1 s, the server takes 2 s to accept the message: giving up
    # then would make the retry send a second copy (RFC 5321 waits 10 minutes here).
    sink.reply_delay_s, sink.reply_delay_commands = 2.0, ("DATA",)
    transport = SmtpTransport(SmtpConfig.from_url(f"{sink.url}&timeout=1"), pool_size=1)
    try:
        result = await transport.send(message("slow@example.com"))
    finally:
        await transport.close()
    assert result.accepted == ["slow@example.com"]
    assert await sink.outbox.count() == 1
    assert SmtpConfig.from_url("smtp://h?timeout=5").data_timeout == 600
    assert SmtpConfig.from_url("smtp://h?data_timeout=120").data_timeout == 120
