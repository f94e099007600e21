"""The development sink: an in-process SMTP server that keeps what it receives in Redis.

When no `SMTP_URL` is configured, the process that runs the worker starts a `MailSink`:
aiosmtpd on 127.0.0.1 (a free port unless one is given), on the running event loop. Each
message received over a real SMTP conversation goes to the outbox in Redis
(mailqueue/mail/outbox.py), where any process reads it.

The sink also records where it listens in `<prefix>:__mailqueue__:sinks`, so a worker
process started without `SMTP_URL` finds it (see `registered_sink_url`). Each running sink
has its own entry there, which only it removes, and which lapses unless renewed: a second
`mailqueue run` on the same Redis, or one killed without a chance to clean up, never takes
away the registration of a sink that still runs.

aiosmtpd logs every SMTP command at INFO (logger `mail.log`): a started sink turns that
logger down to WARNING unless DEBUG logging is on or the logger's level was set already.

For tests, `fail_recipient()` makes the sink answer a chosen SMTP reply (421, 451, 550...)
for a recipient, for ever or a given number of times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from mailqueue.mail.key_namespace import NAMESPACE
from mailqueue.mail.outbox import DEFAULT_MAX_MESSAGES, Outbox

log = logging.getLogger(__name__)

# A sink's registration lapses this long after its last renewal (it renews every third of
# it): a sink killed with SIGKILL stops being found within this time.
REGISTRATION_TTL_S = 30.0


def sink_key(prefix: str) -> str:
    """The sorted set of running sinks: member the sink's URL, score when it lapses (ms)."""
    return f"{prefix}:{NAMESPACE}:sinks"


async def registered_sink_url(redis: aioredis.Redis, prefix: str) -> str | None:
    """The SMTP URL of a running sink under this prefix (the last renewed), if any."""
    now_ms = int(time.time() * 1000)
    found: Any = await redis.zrevrangebyscore(sink_key(prefix), "+inf", now_ms, start=0, num=1)
    if not found:
        return None
    url = found[0]
    return url.decode() if isinstance(url, bytes) else str(url)


@dataclass
class _Fault:
    code: int
    message: str
    times: int | None  # None: for ever


class MailSink:
    """aiosmtpd on the running loop, storing each message in the Redis outbox.

    >>> sink = MailSink(redis_client, "bull")
    >>> await sink.start()          # sink.url == "smtp://127.0.0.1:<port>"
    >>> await sink.outbox.list_messages(10)
    >>> await sink.stop()
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        register: bool = True,
        reply_delay_s: float = 0.0,
        reply_delay_commands: tuple[str, ...] = ("RCPT", "DATA"),
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.host = host
        self.port = port
        self.outbox = Outbox(redis, prefix, max_messages)
        self.register = register
        self.received = 0
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[SMTPServer] = set()
        self._faults: dict[str, _Fault] = {}
        self._renewing: asyncio.Task[None] | None = None
        self._storing = 0  # messages being written to the outbox, not yet answered
        self._stored = asyncio.Event()
        # A slow server, for tests: wait this long before answering each of these commands
        # (RCPT TO, and the end of DATA, before the message is stored). May be changed while
        # running; a client that gives up meanwhile closes the session, and the message it
        # was sending is not stored (the handler is cancelled with the session).
        self.reply_delay_s = reply_delay_s
        self.reply_delay_commands = tuple(c.upper() for c in reply_delay_commands)

    @property
    def url(self) -> str:
        """Where to send: the value for SMTP_URL (starttls=false: the sink speaks plain SMTP)."""
        return f"smtp://{self.host}:{self.port}?starttls=false"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> MailSink:
        """Listen (again, on the same port after a stop). Idempotent."""
        if self._server is not None:
            return self
        loop = asyncio.get_running_loop()

        def factory() -> SMTPServer:
            session = _TrackedSMTP(self, hostname="mailqueue-sink", ident="mailqueue sink",
                                   loop=loop)
            return session

        _quiet_smtp_log()
        self._server = await loop.create_server(factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.register:
            await self._register()
            self._renewing = asyncio.ensure_future(self._renew())
        log.info("SMTP sink listening on %s:%s", self.host, self.port)
        return self

    async def _register(self) -> None:
        key, now_ms = sink_key(self.prefix), int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", now_ms)  # sinks that died without unregistering
            pipe.zadd(key, {self.url: now_ms + int(REGISTRATION_TTL_S * 1000)})
            await pipe.execute()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(REGISTRATION_TTL_S / 3)
            try:
                await self._register()
            except Exception:  # Redis restarting: the next renewal registers again
                log.debug("could not renew the sink's registration", exc_info=True)

    async def stop(self) -> None:
        """Stop listening and drop every open session (clients see a closed connection)."""
        server, self._server = self._server, None
        if server is None:
            return
        renewing, self._renewing = self._renewing, None
        if renewing is not None:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        server.close()
        # A message being stored gets its answer first: closing its session now would keep
        # a message the client never saw accepted, and the client's retry would be a copy.
        deadline = time.monotonic() + 2.0
        while self._storing and time.monotonic() < deadline:
            self._stored.clear()
            try:
                await asyncio.wait_for(self._stored.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        await asyncio.sleep(0)  # let the answered sessions write their 250
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        self._sessions.clear()
        await server.wait_closed()
        if self.register:
            try:  # only this sink's own entry: another sink's stays
                await self.redis.zrem(sink_key(self.prefix), self.url)
            except Exception:  # Redis may be gone first at shutdown
                log.debug("could not unregister the sink", exc_info=True)

    async def __aenter__(self) -> MailSink:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- faults, for tests -------------------------------------------------------------------

    def fail_recipient(
        self, address: str, code: int = 550, message: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer RCPT TO `address` with `code` (e.g. 421, 451, 550), `times` times or always."""
        text = message or {
            421: "Service not available, closing channel",
            450: "Mailbox unavailable, try again later",
            451: "Local error in processing, try again later",
            550: "No such user here",
            552: "Mailbox full",
            553: "Mailbox name not allowed",
        }.get(code, "Refused by the test sink")
        self._faults[address.lower()] = _Fault(code, text, times)

    def clear_faults(self) -> None:
        self._faults.clear()

    async def _slow(self, command: str) -> None:
        if self.reply_delay_s > 0 and command in self.reply_delay_commands:
            await asyncio.sleep(self.reply_delay_s)

    def _fault_for(self, address: str) -> _Fault | None:
        fault = self._faults.get(address.lower())
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self._faults[address.lower()]
        return fault

    # --- aiosmtpd hooks ------------------------------------------------------------------------

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        await self._slow("RCPT")
        fault = self._fault_for(address)
        if fault is not None:
            if fault.code == 421:
                # 421 closes the session, as a real server shutting down would.
                transport = server.transport
                if transport is not None:
                    asyncio.get_running_loop().call_later(0.05, transport.close)
            return f"{fault.code} {fault.message}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8")
        await self._slow("DATA")
        self._storing += 1
        try:
            await self.outbox.add(envelope.mail_from or "", list(envelope.rcpt_tos), raw)
        except Exception:
            log.exception("the sink could not store a message in Redis")
            return "451 Requested action aborted: the sink could not store the message"
        finally:
            self._storing -= 1
            self._stored.set()
        self.received += 1
        return "250 Message accepted for delivery"


def _quiet_smtp_log() -> None:
    """aiosmtpd's INFO lines (one per SMTP command) drown a developer's console: WARNING,
    unless DEBUG is on or someone chose this logger's level."""
    smtp_log = logging.getLogger("mail.log")
    if smtp_log.level == logging.NOTSET and not smtp_log.isEnabledFor(logging.DEBUG):
        smtp_log.setLevel(logging.WARNING)


class _TrackedSMTP(SMTPServer):
    """An aiosmtpd session that the sink can close on stop()."""

    def __init__(self, sink: MailSink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sink._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink._sessions.discard(self)
        super().connection_lost(error)
