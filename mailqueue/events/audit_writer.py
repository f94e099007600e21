"""The audit writer: one process per prefix, elected by a lease, writes the job lifecycle.

Why one: when every worker process read every event for the audit log, that cost each of them
2.8 XREAD and 1 Lua call per mail, 23 % of its CPU (issue 12), for entries that were then
de-duplicated away. Now every process that turns the audit log on (`mailqueue worker`, each
child of `--processes N`, `mailqueue run`) competes for a lease, `<prefix>:__mailqueue__:
audit-writer` (SET NX PX with a random token, renewed by the holder every third of the TTL,
deleted on a clean close; a holder that dies loses it within the TTL). Only the holder reads the
events streams, for the audit log and the failure alerts; the others send one command per
third of a TTL and read nothing.

No entry lost, none doubled: the holder resumes from a cursor kept in Redis per queue (hash
`<prefix>:__mailqueue__:audit-cursor`, the last stream id written for; the `:since` field is
where queues without a cursor start: when the audit log was first turned on), and writes each
batch with its new cursor in one script that checks the lease token and skips ids at or below
the cursor (AuditLog.write_job_events). A new holder, after a crash or a handover, continues
exactly where the old one stopped, as long as the events stream still holds those events:
BullMQ caps each stream (~10,000 events by default), so events trimmed while no process held
the lease are missing from the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import Any

import redis.asyncio as aioredis

from mailqueue.audit import AuditLog, FailureAlerts
from mailqueue.cluster import make_client
from mailqueue.events.streams import (
    events_key,
    id_key,
    parse_event,
    queue_of,
    scan_queues,
    stream_entries,
)
from mailqueue.lua import load_script
from mailqueue.settings import Settings

log = logging.getLogger(__name__)

LEASE_TTL_MS = 10_000
_FLOOR_FIELD = ":since"  # ':' is never in a queue name, so this field is never a queue's
_BLOCK_MS = 1000
_READ_GUARD_S = 15.0  # a blocking read that outlives its BLOCK by this much means a dead link
_READ_COUNT = 500
_DISCOVERY_INTERVAL_S = 2.0
_DISCOVERY_COST_FACTOR = 10  # see reader.py: a keyspace scan must not dominate the reader
_BACKOFF_MIN_S = 0.1
# After a reply shorter than a full batch, wait this long before the next XREAD: the audit log
# need not be live to the millisecond, and under load a blocking XREAD returns after every few
# events (~1 XREAD per mail, measured); waiting lets a tenth of a second's events pile up.
_COALESCE_S = 0.1
_BACKOFF_MAX_S = 5.0

def _new_token() -> str:
    # Host and pid say who holds the lease (for operators, and the tests); the random part
    # makes each tenure's token unique, so a former holder can never pass for the current one.
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


class AuditWriter:
    """Competes for the audit lease; while holding it, writes audit entries and alerts."""

    def __init__(self, connection: dict[str, Any], client: aioredis.Redis, prefix: str,
                 audit: AuditLog, settings: Settings, lease_ms: int = LEASE_TTL_MS) -> None:
        # The blocking XREAD must never hit a socket timeout (docs/bullmq-notes.md #1).
        self._connection = {**connection, "socket_timeout": None}
        self._client = client
        self.prefix = prefix
        self.audit = audit
        # Its own failure windows: a process that also has on_alert callbacks counts the same
        # failures in the EventManager's FailureAlerts, and one window must not see them twice.
        self.alerts = FailureAlerts(client, prefix, settings)
        self.lease_key = f"{prefix}:__mailqueue__:audit-writer"
        self.cursor_key = f"{prefix}:__mailqueue__:audit-cursor"
        self.lease_ms = lease_ms
        self._claim = load_script(client, "audit_lease_claim")
        self._release = load_script(client, "audit_lease_release")
        self._token = _new_token()
        self.holding = False
        self._renewed_at = 0.0
        self._campaign_task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closed = False
        self._wake = asyncio.Event()  # a lost lease: ask again now, not a renewal period later
        # Where the holder stands per queue, and what of that Redis has (the cursor hash):
        # batches without an audited event only move the position, saving a write per batch.
        self._positions: dict[str, str] = {}
        self._persisted: dict[str, str] = {}
        self._floor = "0-0"
        self._queues: set[str] = set()
        self._next_scan = 0.0
        self.tenures = 0
        self.entries_written = 0
        self.last_error: str | None = None

    # --- the lease -----------------------------------------------------------------------

    async def start(self) -> None:
        """Make the first claim now (so a holder's floor exists on return), then keep at it."""
        if self._campaign_task is not None or self._closed:
            return
        delay = 0.0
        try:
            delay = await self._claim_once()
        except Exception as exc:  # Redis away at start: the campaign keeps trying
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("Audit writer could not reach Redis (%s); retrying", self.last_error)
        self._campaign_task = asyncio.get_running_loop().create_task(
            self._campaign(delay), name="mailqueue-audit-lease")

    async def _claim_once(self) -> float:
        """One claim or renewal; returns how long to wait before the next."""
        status, pttl = await self._claim(keys=[self.lease_key, self.cursor_key],
                                         args=[self._token, self.lease_ms, _FLOOR_FIELD])
        renew_s = self.lease_ms / 3000
        if int(status) == 2:
            self._renewed_at = time.monotonic()
            self._begin_tenure()
            return renew_s
        if int(status) == 1:
            self._renewed_at = time.monotonic()
            return renew_s
        if self.holding:
            self._end_tenure("another process holds the audit lease now")
        # Wake just after the holder's lease would run out: a dead holder is replaced within
        # its TTL, not within TTL plus a polling period.
        return min(max(int(pttl), 0) / 1000 + 0.005, renew_s)

    async def _campaign(self, delay: float) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if self._closed:  # closed meanwhile, its cancel possibly swallowed (_writing)
                return
            self._wake.clear()
            try:
                delay = await self._claim_once()
                backoff = _BACKOFF_MIN_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Audit lease: Redis error (%s)", self.last_error)
                # Past its TTL the lease may be another's: stop writing (the write script's
                # token check would refuse anyway, but the reader should not run for nothing).
                if self.holding and time.monotonic() - self._renewed_at > self.lease_ms / 1000:
                    self._end_tenure("the audit lease could not be renewed in time")
                delay, backoff = backoff, min(backoff * 2, _BACKOFF_MAX_S)

    def _begin_tenure(self) -> None:
        if self._writer_task is not None:  # retaken after a lapse: restart from Redis's cursors
            self._writer_task.cancel()
        self.holding = True
        self.tenures += 1
        log.info("Audit writer: this process holds the audit lease (%s)", self._token)
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_forever(self._token), name="mailqueue-audit-writer")

    def _end_tenure(self, why: str) -> None:
        log.warning("Audit writer: %s; stopping", why)
        self.holding = False
        self._token = _new_token()
        self._wake.set()
        task, self._writer_task = self._writer_task, None
        # The writer itself just returns when it finds the lease gone: cancelling itself would
        # interrupt the closing of its connection on the way out.
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # --- reading and writing ---------------------------------------------------------------

    def _writing(self, token: str) -> bool:
        """Whether the tenure of `token` goes on. The writer stops on `_closed`, not on close's
        cancel alone: Python 3.11's asyncio.wait_for swallows a cancel that comes as its XREAD
        returns, and the task goes on (close then waited for it forever: a worker told to stop
        never exited)."""
        return self.holding and token == self._token and not self._closed

    async def _write_forever(self, token: str) -> None:
        backoff = _BACKOFF_MIN_S
        while self._writing(token):
            conn = make_client(self._connection)
            failed = False
            try:
                await self._load_cursors()
                while self._writing(token):
                    streams: dict[Any, Any] = await self._streams(conn)
                    if not streams:
                        await asyncio.sleep(_DISCOVERY_INTERVAL_S)
                        continue
                    reply = await asyncio.wait_for(
                        conn.xread(streams, count=_READ_COUNT, block=_BLOCK_MS),
                        _BLOCK_MS / 1000 + _READ_GUARD_S,
                    )
                    backoff = _BACKOFF_MIN_S
                    if not await self._handle(reply, token):
                        self._end_tenure("the audit lease was lost before a write")
                        return
                    read = sum(len(entries) for _, entries in stream_entries(reply))
                    if 0 < read < _READ_COUNT:
                        await asyncio.sleep(_COALESCE_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Audit writer lost Redis (%s); retrying in %.1f s",
                            self.last_error, backoff)
            finally:
                with contextlib.suppress(Exception):
                    await conn.aclose()
            if failed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _load_cursors(self) -> None:
        # A new tenure, or a reconnect: Redis's cursors are the truth (another holder may
        # have written in between).
        reply: Any = await self._client.hgetall(self.cursor_key)
        stored = {str(k): str(v) for k, v in reply.items()}
        self._floor = stored.pop(_FLOOR_FIELD, "0-0")
        self._positions = dict(stored)
        self._persisted = dict(stored)
        self._next_scan = 0.0

    async def _streams(self, conn: aioredis.Redis) -> dict[str, str]:
        if time.monotonic() >= self._next_scan:
            started = time.monotonic()
            self._queues = await scan_queues(conn, self.prefix)
            finished = time.monotonic()
            self._next_scan = finished + max(_DISCOVERY_INTERVAL_S,
                                             _DISCOVERY_COST_FACTOR * (finished - started))
        return {events_key(self.prefix, q): self._positions.get(q, self._floor)
                for q in self._queues}

    async def _handle(self, reply: Any, token: str) -> bool:
        """Write one XREAD reply's audit entries; False when the lease is no longer ours."""
        for key, entries in stream_entries(reply):
            queue = queue_of(self.prefix, key)
            events = [parse_event(queue, entry_id, fields or {}) for entry_id, fields in entries]
            if not events:
                continue
            last = events[-1]["id"]
            if any(self.audit.job_event_fields(e) is not None for e in events):
                written = await self.audit.write_job_events(
                    self.lease_key, token, self.cursor_key, queue, last, events)
                if written < 0:
                    return False
                self.entries_written += written
                self._persisted[queue] = last
            self._positions[queue] = last
            for event in events:
                if event["event"] == "added" and event.get("name"):
                    self.alerts.remember_job_name(queue, str(event.get("jobId")),
                                                  str(event["name"]))
                await self.alerts.watch(event)
        return True

    async def _flush_positions(self) -> None:
        """Store positions moved past events without an audit entry (on a clean close)."""
        for queue, position in self._positions.items():
            stored = self._persisted.get(queue)
            if stored is None or id_key(position) > id_key(stored):
                if await self.audit.write_job_events(self.lease_key, self._token,
                                                     self.cursor_key, queue, position, []) < 0:
                    return

    # --- lifecycle -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {"holder": self.holding, "tenures": self.tenures,
                "entries_written": self.entries_written, "last_error": self.last_error,
                "watched_queues": sorted(self._queues) if self.holding else []}

    async def close(self) -> None:
        """Stop reading, store the positions, and hand the lease over at once."""
        self._closed = True
        # Each also stops on `_closed`, should its cancel be swallowed (see _writing).
        tasks = [t for t in (self._campaign_task, self._writer_task) if t is not None]
        self._campaign_task = self._writer_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.holding:
            self.holding = False
            try:
                await self._flush_positions()
                await self._release(keys=[self.lease_key], args=[self._token])
            except Exception as exc:  # the lease then ends with its TTL
                log.warning("Audit writer could not release its lease (%s: %s)",
                            type(exc).__name__, exc)
