"""The SMTP transport's circuit breaker (issue 11, point 8), against real sockets: a closed
port for "down", the development sink for "up", and the sink's 550 for a refused recipient."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from mailqueue.mail.breaker import CircuitBreaker
from mailqueue.mail.errors import (
    PermanentDeliveryError,
    SmtpUnreachableError,
    TransportDownError,
)
from mailqueue.mail.sink import MailSink
from mailqueue.mail.transport import SmtpTransport
from mailqueue.redis_server import free_port

from .test_transport import message


def fast_breaker(transport: SmtpTransport) -> CircuitBreaker:
    """The transport's breaker with a 0.2 s first open period (1 s in production)."""
    transport.breaker = CircuitBreaker(transport._probe, transport.config.redacted_url(),
                                       first_delay_s=0.2, max_delay_s=0.8)
    return transport.breaker


async def test_three_refused_connections_open_it_a_probe_closes_it(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    port = free_port()  # nothing listens yet
    transport = SmtpTransport(f"smtp://127.0.0.1:{port}?timeout=5")
    breaker = fast_breaker(transport)
    try:
        errors: list[BaseException] = []
        for i in range(3):
            try:
                await transport.send(message(f"a{i}@example.com"))
            except Exception as exc:
                errors.append(exc)
        # Two failures are the job's ordinary retry; the third opens the breaker, and its
        # job is put back like every later one.
        assert [type(e) for e in errors] == [SmtpUnreachableError, SmtpUnreachableError,
                                             TransportDownError], errors
        assert breaker.state == "open" and breaker.failures == 3 and breaker.since_ms
        started = time.monotonic()
        try:
            await transport.send(message("b@example.com"))
        except TransportDownError as exc:
            down = exc
        assert down.gate is breaker and down.retry_in_ms > 0
        assert f"127.0.0.1:{port} is down" in str(down)
        assert time.monotonic() - started < 0.1  # no connection tried
        # Probes fail while nothing listens; each doubles the open period.
        first_try = breaker.next_try_ms
        seen = breaker.version
        await asyncio.wait_for(breaker.wait_changed(seen), 5)  # half-open: probing
        await asyncio.wait_for(breaker.wait_changed(breaker.version), 5)  # open again
        assert breaker.state == "open" and breaker.probes == 1 and breaker.failures == 4
        assert breaker.next_try_ms is not None and first_try is not None
        assert breaker.next_try_ms - first_try >= 400 - 50
        # The server comes up: the next probe closes the breaker, sends go through.
        sink = MailSink(redis_client, prefix, port=port)
        await sink.start()
        try:
            await asyncio.wait_for(breaker.wait_open(), 10)
            assert breaker.state == "closed" and breaker.failures == 0
            assert breaker.describe()["state"] == "closed"
            result = await transport.send(message("c@example.com"))
            assert result.accepted == ["c@example.com"]
        finally:
            await sink.stop()
    finally:
        await transport.close()


async def test_a_refused_recipient_is_the_jobs_problem_not_the_transports(
    sink: MailSink, transport: SmtpTransport
) -> None:
    breaker = fast_breaker(transport)
    sink.fail_recipient("gone@example.com", 550)
    for _ in range(5):
        try:
            await transport.send(message("gone@example.com"))
        except PermanentDeliveryError:
            pass
    assert breaker.state == "closed" and breaker.failures == 0
    assert (await transport.send(message("ok@example.com"))).accepted == ["ok@example.com"]
