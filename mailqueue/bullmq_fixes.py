"""Every workaround for a bug of bullmq 3.4.4 lives here, named after the bug it covers.

See ../shared/BULLMQ-NOTES.md ("Broken or missing") for the measurements behind each one;
each has a regression test under tests/ that fails without it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

# --- Idle stalls (BULLMQ-NOTES item 1) -------------------------------------------------------
# redis-py gives connections a 5 s socket timeout by default, while a worker blocks for 5 s
# and QueueEvents for 10 s: the blocking calls time out and back off, making an idle worker
# pick up jobs 10-15 s late. Every bullmq connection we build has no socket timeout.


def connection_options(redis_url: str) -> dict[str, Any]:
    """bullmq connection options for a URL, with the idle-stall fix applied.

    bullmq splats a dict into `redis.asyncio.Redis(**opts)`; a URL string would give us no
    way to pass `socket_timeout=None`.
    """
    parsed = urlparse(redis_url)
    options: dict[str, Any] = {
        "socket_timeout": None,  # the fix
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "username": unquote(parsed.username) if parsed.username else None,
        "password": unquote(parsed.password) if parsed.password else None,
    }
    if parsed.scheme == "unix":
        options["unix_socket_path"] = parsed.path
        options["host"] = None
        options["port"] = None
    else:
        options["host"] = parsed.hostname or "localhost"
        options["port"] = parsed.port or 6379
        if parsed.scheme == "rediss":
            options["ssl"] = True
    database = parsed.path.strip("/") if parsed.scheme != "unix" else ""
    options["db"] = int(database) if database.isdigit() else 0
    return options
