"""SMTP delivery over aiosmtplib, with a small pool of connections shared by a worker's jobs.

One reused connection was ~3x faster than a connection per message (measured when this was
written; bench/run.py measures it again), so a transport keeps up to `pool_size`
connections open and hands each to one job at a time.
A connection the server dropped while idle is noticed on the next MAIL command and
replaced, and the message is sent again on the new connection: nothing was accepted yet.

Every failure is classified: a 5xx reply about the message or its recipients is a
`PermanentDeliveryError` (no retry); a 4xx reply, a refused or dropped connection, a
timeout or a failed login is a `TransientDeliveryError` (the job is retried).

Connection failures also go to the transport's circuit breaker (mailqueue.mail.breaker):
after a few in a row it opens, and sends raise `TransportDownError` (the job is put back
without spending an attempt, and the worker stops taking jobs) until a probe gets through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import NotRequired, TypedDict

import aiosmtplib

from mailqueue.mail.breaker import CircuitBreaker
from mailqueue.mail.errors import (
    DeliveryOutcomeUnknownError,
    PermanentDeliveryError,
    SmtpUnreachableError,
    TransientDeliveryError,
)
from mailqueue.mail.message import OutgoingMessage
from mailqueue.smtp_url import SmtpConfig

log = logging.getLogger(__name__)

# Servers close idle sessions (often after 60-300 s); past this we reconnect without trying.
MAX_IDLE_S = 50.0


@dataclass(slots=True)
class SendResult:
    """What the server said: who was accepted, who was refused (address -> reply)."""

    accepted: list[str]
    rejected: dict[str, str]
    response: str
    # The server's reply to RCPT TO for every recipient, accepted or not.
    replies: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Connection:
    client: aiosmtplib.SMTP
    last_used: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        return self.client.is_connected and time.monotonic() - self.last_used < MAX_IDLE_S


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


class SmtpTransport:
    """Sends `OutgoingMessage`s through a pool of at most `pool_size` SMTP connections."""

    def __init__(self, config: SmtpConfig | str, pool_size: int | None = None) -> None:
        self.config = SmtpConfig.from_url(config) if isinstance(config, str) else config
        self.pool_size = pool_size or self.config.pool_size
        self._slots = asyncio.Semaphore(self.pool_size)
        self._idle: list[_Connection] = []
        self._closed = False
        self.connections_opened = 0  # for tests and the bench
        self.breaker = CircuitBreaker(self._probe, self.config.redacted_url())

    def __repr__(self) -> str:
        return f"SmtpTransport({self.config.redacted_url()}, pool_size={self.pool_size})"

    async def _connect(self) -> _Connection:
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host, port=c.port, username=c.username, password=c.password,
            use_tls=c.use_tls, start_tls=c.start_tls, timeout=c.timeout,
            validate_certs=c.validate_certs, local_hostname=c.local_hostname,
        )
        where = c.redacted_url()
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A login failure is about our settings, not the message: retry, so the jobs
            # go out once SMTP_URL is fixed, instead of failing every one for good.
            raise TransientDeliveryError(
                f"SMTP login refused by {where}: {_reply(exc)}; check the user and password "
                "in SMTP_URL", exc.code,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise TransientDeliveryError(
                f"SMTP server {where} refused the session: {_reply(exc)}", exc.code
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise SmtpUnreachableError(f"cannot reach SMTP server {where}: {exc}") from exc
        self.connections_opened += 1
        return _Connection(client)

    async def _connect_counted(self) -> _Connection:
        """_connect, the outcome told to the breaker. The failure that opens it (or one that
        ends while it is open) raises TransportDownError: its job is put back, not failed."""
        try:
            connection = await self._connect()
        except SmtpUnreachableError as exc:
            if self.breaker.failure(exc):
                raise self.breaker.down_error() from exc
            raise
        self.breaker.success()
        return connection

    async def _probe(self) -> None:
        """The breaker's half-open probe: one session opened and closed again."""
        await _quit(await self._connect())

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; raise `PermanentDeliveryError` or `TransientDeliveryError`."""
        if self._closed:
            raise TransientDeliveryError("the SMTP transport is closed")
        self.breaker.check()
        async with self._slots:
            connection: _Connection | None = None
            while self._idle and connection is None:
                candidate = self._idle.pop()
                if candidate.usable():
                    connection = candidate
                else:
                    await _quit(candidate)
            reused = connection is not None
            if connection is None:
                self.breaker.check()  # it may have opened while this send waited for a slot
                connection = await self._connect_counted()
            try:
                try:
                    result = await self._transaction(connection.client, message)
                except _StaleConnectionError:
                    if not reused:
                        raise TransientDeliveryError(
                            f"SMTP server {self.config.redacted_url()} closed the connection"
                        ) from None
                    # The server closed the idle connection; nothing was sent yet.
                    connection.client.close()
                    connection = await self._connect_counted()
                    try:
                        result = await self._transaction(connection.client, message)
                    except _StaleConnectionError:
                        raise TransientDeliveryError(
                            f"SMTP server {self.config.redacted_url()} closed the connection"
                        ) from None
            except BaseException as exc:
                if not isinstance(exc, PermanentDeliveryError | TransientDeliveryError):
                    # Cancelled or broken mid-command: the session state is unknown.
                    connection.client.close()
                if connection.client.is_connected:
                    # Keep the connection only when it is back in a clean state.
                    try:
                        await connection.client.rset()
                    except Exception:
                        connection.client.close()
                if connection.client.is_connected and not self._closed:
                    connection.last_used = time.monotonic()
                    self._idle.append(connection)
                raise
            if self._closed:
                await _quit(connection)
            else:
                connection.last_used = time.monotonic()
                self._idle.append(connection)
            return result

    async def _transaction(self, client: aiosmtplib.SMTP, message: OutgoingMessage) -> SendResult:
        where = self.config.redacted_url()
        try:
            await client.mail(message.sender)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:
                raise _StaleConnectionError from exc
            raise _classify(exc, f"{where} refused sender {message.sender}") from exc
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _StaleConnectionError from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(f"SMTP error at MAIL FROM on {where}: {exc}") from exc

        accepted: list[str] = []
        rejected: dict[str, str] = {}
        replies: dict[str, str] = {}
        for recipient in message.recipients:
            try:
                reply = await client.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if 400 <= exc.code < 500:
                    # Sending to the others now would send them a duplicate on the retry.
                    raise TransientDeliveryError(
                        f"{where} deferred {recipient}: {_reply(exc)}", exc.code
                    ) from exc
                rejected[recipient] = replies[recipient] = _reply(exc)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise TransientDeliveryError(f"SMTP error at RCPT TO on {where}: {exc}") from exc
            else:
                accepted.append(recipient)
                replies[recipient] = f"{reply.code} {reply.message}".strip()
        if not accepted:
            refused = "; ".join(f"{r}: {text}" for r, text in rejected.items())
            code = int(next(iter(rejected.values()))[:3]) if rejected else None
            raise PermanentDeliveryError(f"{where} refused every recipient ({refused})", code,
                                         rejected)

        try:
            response = await client.data(message.data, timeout=self.config.data_timeout)
        except aiosmtplib.SMTPResponseException as exc:
            error = _classify(exc, f"{where} refused the message")
            if isinstance(error, PermanentDeliveryError):  # about every accepted recipient
                error.refused = dict.fromkeys(accepted, _reply(exc))
            raise error from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # The one ambiguous moment: the server may have accepted the message before the
            # connection broke. The job is retried; see docs/mail.md, "double-send window".
            raise DeliveryOutcomeUnknownError(
                f"connection to {where} lost during DATA (the message may have been "
                f"delivered): {exc}"
            ) from exc
        return SendResult(accepted, rejected, f"{response.code} {response.message}".strip(),
                          replies)

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their send ends."""
        self._closed = True
        self.breaker.close()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(c) for c in idle))


class _StaleConnectionError(Exception):
    """The server closed the connection before MAIL FROM was accepted: nothing was sent."""


def _classify(exc: aiosmtplib.SMTPResponseException, what: str) -> Exception:
    reply = _reply(exc)
    if 500 <= exc.code < 600:
        return PermanentDeliveryError(f"{what}: {reply}", exc.code)
    return TransientDeliveryError(f"{what}: {reply}", exc.code)


async def _quit(connection: _Connection) -> None:
    client = connection.client
    if not client.is_connected:
        return
    try:
        await asyncio.wait_for(client.quit(), timeout=2)
    except Exception:
        client.close()


class SmtpProbe(TypedDict):
    """Whether an SMTP server answers a session: how fast when it does, else why not."""

    reachable: bool
    latency_ms: NotRequired[float]
    error: NotRequired[str]


async def probe_smtp(config: SmtpConfig, timeout: float = 3.0) -> SmtpProbe:
    """Whether the server answers a session (connect, EHLO, login, NOOP), and how fast."""
    transport = SmtpTransport(replace(config, timeout=timeout), pool_size=1)
    started = time.perf_counter()
    try:
        connection = await transport._connect()
        await connection.client.noop()
        await _quit(connection)
    except Exception as exc:
        return SmtpProbe(reachable=False, error=str(exc))
    return SmtpProbe(reachable=True,
                     latency_ms=round((time.perf_counter() - started) * 1000, 2))
