"""The audit log and the failure alerts.

Both live in capped Redis streams (the cap is the rotation), so every process and the
dashboard read the same history. Job lifecycle entries are written by the one elected audit
writer (mailqueue/events/audit_writer.py), exactly once per event: each batch goes in with the
writer's cursor, in one script that checks the writer's lease and skips ids already written.
Alerts can be raised by several processes (the audit writer, and any process with `on_alert`
callbacks): each is recorded once, by whichever gets there first.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from mailqueue.keys import Keys
from mailqueue.lua import load_script
from mailqueue.settings import Settings

log = logging.getLogger(__name__)

Event = dict[str, Any]
AlertCallback = Callable[[dict[str, Any]], Any]

ALERTS_MAX = 1000
JOB_NAME_CACHE = 10_000
DETAIL_MAX = 500
# Lifecycle events the audit log records, with the result written for each.
AUDIT_EVENTS = {
    "completed": "ok", "failed": "error", "stalled": "stalled", "retries-exhausted": "error",
}

def _now_ms() -> float:
    return time.time() * 1000


def stream_ms(stream_id: str) -> int:
    """The milliseconds part of a Redis stream id: when Redis wrote the entry."""
    return int(stream_id.partition("-")[0])


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def call_safely(callback: Callable[[Any], Any], arg: Any, what: str) -> None:
    """Call a sync or async callback; a failing one is logged and never stops the caller."""
    try:
        result = callback(arg)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("%s %r raised", what, callback)


class _OnceWriter:
    """XADD to a capped stream unless another process already wrote for the same marker."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._script = load_script(client, "stream_add_once")

    async def add(self, stream: str, marker: str, ttl_ms: int, maxlen: int,
                  fields: dict[str, Any]) -> str | None:
        flat: list[Any] = [ttl_ms, maxlen]
        for key, value in fields.items():
            flat += [key, "" if value is None else str(value)]
        entry_id = await self._script(keys=[stream, marker], args=flat)
        return str(entry_id) if entry_id else None


class AuditLog:
    """Who did what, on what, with what result: `<prefix>:__mailqueue__:audit`."""

    def __init__(self, client: aioredis.Redis, prefix: str, settings: Settings) -> None:
        self._client = client
        self.prefix = prefix
        self.key = f"{prefix}:__mailqueue__:audit"
        self._max = settings.audit_log_max
        self._write_batch = load_script(client, "audit_write_batch")

    async def record(self, actor: str, action: str, target: str, result: str,
                     detail: str = "", at_ms: float | None = None) -> str:
        """Append one entry; returns its id."""
        fields = {"time": iso(at_ms if at_ms is not None else _now_ms()), "actor": actor,
                  "action": action, "target": target, "result": result, "detail": detail}
        entry_id = await self._client.xadd(
            self.key, fields,  # type: ignore[arg-type]
            maxlen=self._max, approximate=True,
        )
        return str(entry_id)

    @staticmethod
    def job_event_fields(event: Event) -> dict[str, str] | None:
        """The entry for a job's completion, failure, stall or exhausted retries (else None)."""
        result = AUDIT_EVENTS.get(event["event"])
        if result is None:
            return None
        if event["event"] == "completed":
            detail = json.dumps(event.get("returnvalue"), default=str)
        elif event["event"] == "retries-exhausted":
            detail = f"attemptsMade={event.get('attemptsMade')}"
        else:
            detail = str(event.get("failedReason") or "")
        return {
            "time": iso(stream_ms(event["id"])), "actor": "system", "action": event["event"],
            "target": f"{event['queue']}/{event.get('jobId', '')}", "result": result,
            "detail": detail[:DETAIL_MAX],
        }

    async def write_job_events(self, lease_key: str, token: str, cursor_key: str, queue: str,
                               last_id: str, events: list[Event]) -> int:
        """Write the audited events of one queue's batch and move its cursor to `last_id`.

        Returns the number of entries written (ids already behind the cursor are skipped),
        or -1 when `token` no longer holds the lease at `lease_key`.
        """
        rows = []
        for event in events:
            fields = self.job_event_fields(event)
            if fields is not None:
                rows.append([event["id"], [x for pair in fields.items() for x in pair]])
        written = await self._write_batch(
            keys=[lease_key, cursor_key, self.key],
            args=[token, queue, last_id, self._max, json.dumps(rows) if rows else "[]"],
        )
        return int(written)

    async def newest(self, n: int = 100) -> list[dict[str, Any]]:
        """The newest `n` entries, newest first."""
        if n <= 0:
            return []
        entries: Any = await self._client.xrevrange(self.key, "+", "-", count=n)
        return [{"id": entry_id, **fields} for entry_id, fields in entries]


class FailureAlerts:
    """An alert when one queue, or one job name in a queue, fails N times within W seconds.

    Event times come from the Redis stream ids, so every process counts the same windows; the
    alert is recorded once (`<prefix>:__mailqueue__:alerts`), logged, and passed to every
    process's callbacks. The same key does not alert again until its window has passed.
    """

    def __init__(self, client: aioredis.Redis, prefix: str, settings: Settings) -> None:
        self._client = client
        self.prefix = prefix
        self.key = f"{prefix}:__mailqueue__:alerts"
        self.settings = settings
        self._once = _OnceWriter(client)
        self.callbacks: list[AlertCallback] = []
        self._failures: dict[tuple[str, str | None], deque[int]] = {}
        self._alerted_at: dict[tuple[str, str | None], int] = {}
        self._job_names: OrderedDict[tuple[str, str], str] = OrderedDict()

    def remember_job_name(self, queue: str, job_id: str, name: str) -> None:
        """From `added` events: saves a lookup when the job fails later."""
        self._job_names[(queue, job_id)] = name
        self._job_names.move_to_end((queue, job_id))
        if len(self._job_names) > JOB_NAME_CACHE:
            self._job_names.popitem(last=False)

    async def _job_name(self, queue: str, job_id: str) -> str | None:
        name: Any = self._job_names.get((queue, job_id))
        if name is None and job_id:
            with contextlib.suppress(Exception):
                name = await self._client.hget(Keys(self.prefix, queue).job(job_id), "name")
            if name:
                self.remember_job_name(queue, job_id, name)
        return str(name) if name else None

    async def watch(self, event: Event) -> None:
        """Count a failure per queue and per (queue, job name); alert at the threshold."""
        if event["event"] != "failed":
            return
        queue, job_id = event["queue"], str(event.get("jobId", ""))
        at_ms = stream_ms(event["id"])
        threshold = self.settings.alert_failure_threshold
        window_ms = int(self.settings.alert_window_s * 1000)
        name = await self._job_name(queue, job_id)
        for key in [(queue, None), *([(queue, name)] if name else [])]:
            recent = self._failures.setdefault(key, deque(maxlen=threshold))
            recent.append(at_ms)
            if len(recent) < threshold or at_ms - recent[0] >= window_ms:
                continue
            if at_ms - self._alerted_at.get(key, -window_ms) < window_ms:
                continue  # alerted for this key less than a window ago
            self._alerted_at[key] = at_ms
            await self._raise(key, event, window_ms)

    async def _raise(self, key: tuple[str, str | None], event: Event, window_ms: int) -> None:
        queue, name = key
        s = self.settings
        what = f"job {name!r} in queue {queue!r}" if name else f"queue {queue!r}"
        message = (f"{what} failed {s.alert_failure_threshold} times within "
                   f"{s.alert_window_s:g} s (last: job {event.get('jobId')}: "
                   f"{event.get('failedReason') or 'no reason'})")
        log.warning("Alert: %s", message)
        alert: dict[str, Any] = {
            "time": iso(stream_ms(event["id"])), "kind": "job" if name else "queue",
            "queue": queue, "job_name": name or "", "failures": s.alert_failure_threshold,
            "window_s": s.alert_window_s, "job_id": str(event.get("jobId", "")),
            "reason": str(event.get("failedReason") or "")[:DETAIL_MAX], "message": message,
        }
        digest = hashlib.sha1(f"{queue}\0{name or ''}".encode()).hexdigest()
        marker = f"{self.prefix}:__mailqueue__:alert-lock:{digest}"
        try:
            alert["id"] = await self._once.add(self.key, marker, window_ms, ALERTS_MAX, alert)
        except Exception:
            log.exception("Could not record the alert in Redis")
            alert["id"] = None
        for callback in list(self.callbacks):
            await call_safely(callback, dict(alert), "Alert callback")

    async def newest(self, n: int = 50) -> list[dict[str, Any]]:
        """The newest `n` alerts recorded in Redis, newest first."""
        if n <= 0:
            return []
        entries: Any = await self._client.xrevrange(self.key, "+", "-", count=n)
        return [{"id": entry_id, **fields} for entry_id, fields in entries]
