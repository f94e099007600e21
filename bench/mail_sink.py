"""An SMTP sink that accepts every message and discards it: `python bench/mail_sink.py`.

For `bench/mail.py`: unlike `bench/sink.py` (the development sink, which stores each message
in Redis), this one touches no Redis, so the Redis figures of the mail bench count only the
workers' commands. aiosmtpd on 127.0.0.1, a free port, plain SMTP (no STARTTLS offered).

Prints its SMTP URL on the first line of stdout. Then each line `stats` on stdin is answered
with one JSON line: messages, bytes (of the DATA), recipients and SMTP connections opened
since it started. Serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

STATS = {"messages": 0, "bytes": 0, "recipients": 0, "connections": 0}


class Discard:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        STATS["messages"] += 1
        STATS["bytes"] += len(content)
        STATS["recipients"] += len(envelope.rcpt_tos)
        return "250 OK"


class CountingSMTP(SMTP):
    def connection_made(self, transport: Any) -> None:
        STATS["connections"] += 1
        super().connection_made(transport)


async def main() -> None:
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    loop = asyncio.get_running_loop()
    handler = Discard()
    server = await loop.create_server(
        lambda: CountingSMTP(handler, hostname="bench-sink", ident="bench sink", loop=loop),
        "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"smtp://127.0.0.1:{port}?starttls=false", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def answer() -> None:
        while line := await reader.readline():
            if line.strip() == b"stats":
                print(json.dumps(STATS), flush=True)
        stop.set()  # the bench exited: stdin closed

    task = asyncio.ensure_future(answer())
    await stop.wait()
    task.cancel()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
