"""Which queues exist under the prefix: found by SCAN, Node-made ones included.

A scan walks the whole keyspace (a million waiting jobs are a million keys, about a second
of Redis per scan), so it is kept off the request path: concurrent callers share one scan,
a cached list is answered at once while a stale one is refreshed in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from mailqueue.errors import MailQueueError
from mailqueue.job_options import validate_queue_name
from mailqueue.keys import queue_of_marker

log = logging.getLogger(__name__)

_CACHE_S = 2.0
# The cached list lives at least this many times what the last scan took.
_COST_FACTOR = 10


class QueueDiscovery:
    """The cached list of queue names, and the names no queue can have."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self.prefix = prefix
        self._discovered: tuple[float, list[str]] | None = None
        # Names found in Redis that no queue handle accepts (a producer wrote a 10,000
        # character name, or spaces around it): listed apart, so they cannot fail the rest.
        self._unusable: list[str] = []
        self._scan: asyncio.Task[list[str]] | None = None
        self._ttl = _CACHE_S
        # Queues this process made or obliterated while a scan ran, applied to its result.
        self._noted: dict[str, bool] = {}

    async def list_queues(self, refresh: bool = False) -> list[str]:
        """Every BullMQ queue under the prefix, sorted by name.

        Fresh for `_CACHE_S` or ten times what the last scan took, whichever is longer.
        Queues made or obliterated by this process show at once; `refresh=True` waits for
        a scan of its own.
        """
        if refresh:
            return list(await self._scan_names())
        cached = self._discovered
        if cached is None:
            if self._scan is None or self._scan.done():
                self._scan = asyncio.create_task(self._scan_names(),
                                                 name="mailqueue-queue-discovery")
            # Shielded: a caller that goes away must not cancel the scan the others await.
            return list(await asyncio.shield(self._scan))
        if time.monotonic() - cached[0] >= self._ttl and (
                self._scan is None or self._scan.done()):
            self._scan = asyncio.create_task(self._refresh_in_background(),
                                             name="mailqueue-queue-discovery")
        return list(cached[1])

    def unusable_queue_names(self) -> list[str]:
        """Queue-like names the last scan found but left out of `list_queues`, because no
        queue can have them (see `validate_queue_name`): over 200 characters, or with spaces
        around. Shown to operators as a notice, never used as a queue."""
        return list(self._unusable)

    def note(self, name: str, exists: bool) -> None:
        """A queue this process just made (or obliterated): the cached list follows at once,
        without a new scan of the keyspace."""
        self._noted[name] = exists
        if self._discovered is not None:
            at, names = self._discovered
            self._discovered = (at, sorted(set(names) | {name} if exists
                                           else set(names) - {name}))

    async def close(self) -> None:
        if self._scan is not None and not self._scan.done():
            self._scan.cancel()
            with contextlib.suppress(BaseException):
                await self._scan

    async def _refresh_in_background(self) -> list[str]:
        try:
            return await self._scan_names()
        except Exception as exc:  # Redis away: keep the list we have; the next call retries
            log.warning("Queue discovery failed (%s); keeping the last list", exc)
            return list(self._discovered[1]) if self._discovered else []

    async def _scan_names(self) -> list[str]:
        started = time.monotonic()
        self._noted = {}
        # Only what Redis holds counts: a handle made by a lookup is not a queue. On a
        # cluster, redis-py's scan_iter walks every master. One pass finds the three marker
        # keys (`meta`, `id`, `events`); the few other keys the pattern lets through are
        # left out by queue_of_marker.
        names: set[str] = set()
        unusable: set[str] = set()
        pattern = f"{_glob_escape(self.prefix + ':')}*:[mie][edv]*"
        async for key in self._client.scan_iter(match=pattern, count=1000):
            name = queue_of_marker(self.prefix, key)
            if name is not None:
                (names if _usable(name) else unusable).add(name)
        for name, exists in self._noted.items():
            (names.add if exists else names.discard)(name)
        result = sorted(names)
        finished = time.monotonic()
        self._discovered = (finished, result)
        self._unusable = sorted(unusable)
        self._ttl = max(_CACHE_S, _COST_FACTOR * (finished - started))
        return result


def _glob_escape(text: str) -> str:
    """`text` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _usable(name: str) -> bool:
    try:
        validate_queue_name(name)
    except MailQueueError:
        return False
    return True
