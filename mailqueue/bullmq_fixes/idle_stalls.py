"""Idle stalls (docs/bullmq-notes.md #1): blocking reads must never time out.

One workaround of bullmq 3.4.4, named after the bug it covers; its canary test
(tests/mailqueue/test_bullmq_canaries.py) fails the day bullmq fixes the bug, and then this
module goes.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from mailqueue.errors import RedisUnavailableError
from mailqueue.redact import redact_url

# redis-py gives connections a 5 s socket timeout by default, while a worker blocks for 5 s
# and QueueEvents for 10 s: the blocking calls time out and back off, making an idle worker
# pick up jobs 10-15 s late. Every bullmq connection we build has no socket timeout.


def connection_options(redis_url: str) -> dict[str, Any]:
    """bullmq connection options for a URL, with the idle-stall fix applied.

    The URL is read by redis-py's own parser, so everything `redis.from_url` honours works
    here too: `rediss://` with `?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem` (and the
    other `ssl_*` options), a database as `/2` or `?db=2`, `user:password@`, `unix://`
    sockets. The result is keyword arguments of `redis.asyncio.Redis(...)`: bullmq splats a
    dict into it, and a URL string would give us no way to pass `socket_timeout=None`.
    An option redis-py does not know is a one-line error naming it (redis-py would only
    fail at the first connection, with a TypeError).
    """
    try:
        parsed = parse_url(redis_url)
    except ValueError as exc:
        raise RedisUnavailableError(f"REDIS_URL {redact_url(redis_url)!r}: {exc}") from None
    connection_class = parsed.pop("connection_class", None)
    options: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        **parsed,
        # The fix; after the URL's own options, which must not bring the timeout back.
        "socket_timeout": None,
    }
    if connection_class is not None and issubclass(connection_class, UnixDomainSocketConnection):
        # redis.asyncio.Redis names the socket `unix_socket_path`; a TCP host does not apply.
        options["unix_socket_path"] = options.pop("path", "")
        options.pop("socket_keepalive", None)
    elif connection_class is not None and issubclass(connection_class, SSLConnection):
        options["ssl"] = True
    known = _redis_client_options()
    for name in sorted(set(options) - known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else "see redis-py's Redis() arguments"
        raise RedisUnavailableError(
            f"REDIS_URL {redact_url(redis_url)!r}: unknown option {name!r} ({hint})"
        )
    return options


@functools.cache
def _redis_client_options() -> frozenset[str]:
    params = inspect.signature(aioredis.Redis.__init__).parameters
    return frozenset(name for name in params if name != "self")


def pool_options(connection: Mapping[str, Any]) -> dict[str, Any]:
    """`connection_options` as a connection pool takes them (what `Redis(...)` does inside).

    `redis.asyncio.Redis(**options)` turns `ssl=True` and `unix_socket_path` into a
    connection class; a pool built by hand must be given that class itself.
    """
    options = dict(connection)
    path = options.pop("unix_socket_path", None)
    ssl = options.pop("ssl", False)
    if path:
        for tcp_only in ("host", "port", "socket_keepalive", "socket_keepalive_options"):
            options.pop(tcp_only, None)
        options = {k: v for k, v in options.items() if not k.startswith("ssl_")}
        options.update(connection_class=UnixDomainSocketConnection, path=path)
    elif ssl:
        options["connection_class"] = SSLConnection
    else:
        options = {k: v for k, v in options.items() if not k.startswith("ssl_")}
    return options
