"""How many jobs each queue holds per state, and its throughput: many queues per round trip.

The counts are bullmq's own `getCounts` script (so Node and Python agree on them) with the
`meta` paused flag beside it; the throughput series come from stats.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypedDict

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from mailqueue.errors import MailQueueError
from mailqueue.job_options import validate_queue_name
from mailqueue.queues import stats
from mailqueue.queues.handles import QueueHandles
from mailqueue.types import JOB_STATES

# bullmq's getCounts takes the key names of the states, not the states' names.
_COUNTED_KEYS = ["wait" if state == "waiting" else state for state in JOB_STATES]


class QueueCounts(TypedDict):
    """A queue's jobs per state (those of a paused queue counted as paused) and its flag."""

    counts: dict[str, int]
    paused: bool


class QueueOverview(QueueCounts):
    """What the overview shows of a queue: counts and its last hour, minute by minute."""

    series: stats.Series
    completed_per_minute: list[int]  # the known minutes, newest first
    failed_per_minute: list[int]


class QueueMetrics(QueueCounts):
    """Counts and BullMQ's per-minute metrics (workers started with `metrics` write them)."""

    completed: stats.Metrics
    failed: stats.Metrics


class QueueCounter:
    """Counts, overview rows, metrics and charts of queues."""

    def __init__(self, client: aioredis.Redis, handles: QueueHandles) -> None:
        self._client = client
        self._handles = handles
        self._get_counts: AsyncScript | None = None

    async def get_job_counts(self, queue: str) -> dict[str, int]:
        """Counts for every state, `paused` included (bullmq leaves it out by default).

        BullMQ keeps the jobs of a paused queue in its `wait` list and only flags the queue
        as paused in `meta`; a person expects them counted as paused, so they are.
        """
        await self._handles.get_queue(queue)
        replies = await self._pipeline([queue])
        return _parse_counts(replies[0], replies[1])["counts"]

    async def get_many_job_counts(self, names: list[str]) -> dict[str, QueueCounts]:
        """Counts per state and the paused flag of many queues, in one round trip (rather
        than two per queue, which made a page with the sidebar cost ~50 of them)."""
        names = _checked(names)
        replies = await self._pipeline(names)
        return {name: _parse_counts(replies[2 * i], replies[2 * i + 1])
                for i, name in enumerate(names)}

    async def get_overview(self, names: list[str], now_ms: int | None = None
                           ) -> dict[str, QueueOverview]:
        """Per queue its counts, the paused flag and its last hour of completed and failed
        jobs per minute (`series`, see stats.py), in ONE round trip."""
        names = _checked(names)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        replies = await self._pipeline(names, now)
        result: dict[str, QueueOverview] = {}
        for i, name in enumerate(names):
            raw, paused, series_reply = replies[3 * i: 3 * i + 3]
            counted = _parse_counts(raw, paused)
            series = stats.parse_series(series_reply, stats.HOUR, now)
            known = stats.known_newest_first
            result[name] = {**counted, "series": series,
                            "completed_per_minute": known(series["completed"]),
                            "failed_per_minute": known(series["failed"])}
        return result

    async def get_metrics(self, queue: str, kind: str = "completed", points: int = 60
                          ) -> stats.Metrics:
        """Per-minute counts written by workers with metrics on (newest first).

        bullmq for Python has no getMetrics (docs/bullmq-notes.md #4); this reads the same keys
        Node's getMetrics reads: `<prefix>:<queue>:metrics:<kind>` and its `:data` list.
        """
        if kind not in ("completed", "failed"):
            raise MailQueueError("kind must be 'completed' or 'failed'")
        await self._handles.get_queue(queue)
        return await stats.read_metrics(self._client,
                                              self._handles.keys(queue).metrics(kind), points)

    async def get_all_queue_metrics(self) -> dict[str, QueueMetrics]:
        """Counts and completed/failed per minute for every queue under the prefix."""
        result: dict[str, QueueMetrics] = {}
        for name in await self._handles.discovery.list_queues():
            counted, completed, failed = await asyncio.gather(
                self.get_many_job_counts([name]),
                self.get_metrics(name, "completed"),
                self.get_metrics(name, "failed"),
            )
            result[name] = {**counted[name], "completed": completed, "failed": failed}
        return result

    async def get_charts(self, queue: str, now_ms: int | None = None
                         ) -> stats.QueueCharts:
        """The queue page's charts: last hour and day of throughput, wait and run times."""
        await self._handles.get_queue(queue)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return await stats.read_queue_charts(self._client, self._handles.prefix, queue,
                                                   now)

    async def _pipeline(self, names: list[str], series_now_ms: int | None = None
                        ) -> list[Any]:
        """The replies of one pipeline: per queue, bullmq's `getCounts` script and an HEXISTS
        of `meta` (paused); with `series_now_ms`, also the queue's last-hour throughput
        series (stats.HOUR ending then; 3 replies per queue then, 2 otherwise)."""
        if not names:
            return []
        if self._get_counts is None:  # bullmq's own script, as its Queue.getJobCounts runs it
            source = self._handles.handle(names[0]).scripts.commands["getCounts"].script
            self._get_counts = self._client.register_script(source)
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            keys = self._handles.keys(name)
            await self._get_counts(keys=[keys.base], args=_COUNTED_KEYS, client=pipe)
            pipe.hexists(keys.meta, "paused")
            if series_now_ms is not None:
                await stats.queue_series_command(self._client, pipe, keys,
                                                       stats.HOUR, series_now_ms)
        replies: list[Any] = await pipe.execute()
        return replies


def _checked(names: list[str]) -> list[str]:
    for name in names:
        validate_queue_name(name)
    return list(names)


def _parse_counts(raw: list[Any], paused_flag: Any) -> QueueCounts:
    """One queue's `getCounts` reply and `meta` paused flag: counts per state (the jobs of
    a paused queue counted as paused, not waiting) and the flag."""
    paused = bool(paused_flag)
    counts: dict[str, int] = {state: int(n or 0)
                              for state, n in zip(JOB_STATES, raw, strict=True)}
    if paused:
        counts["paused"] += counts["waiting"]
        counts["waiting"] = 0
    return {"counts": counts, "paused": paused}
