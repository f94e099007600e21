"""The SMTP sink in its own process, for the bench: `python bench/sink.py REDIS_URL PREFIX`.

Prints its SMTP URL on the first line of stdout, then serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import redis.asyncio as aioredis

from mailqueue.mail.sink import MailSink


async def main(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    sink = await MailSink(client, prefix).start()
    print(sink.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the bench exited: stdin closed
    await stop.wait()
    await sink.stop()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
