"""QueueManager: every queue-level operation, over the collaborators that own each concern.

Handles and discovery (handles.py, discovery.py), counts and charts (counts.py, stats.py),
one job's reads (job_view.py), table reads (job_reads.py), job writes (job_writes.py),
schedulers (schedules.py), global limits (limits.py) and alerts (alerts.py) each live in a
module of their own; this class builds them over one Redis client and answers for them all.
The operations on a whole queue (pause, clean, drain, obliterate...) are its own.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from mailqueue.errors import MailQueueError
from mailqueue.keys import Keys
from mailqueue.queues.alerts import QueueAlerts
from mailqueue.queues.counts import QueueCounter
from mailqueue.queues.discovery import QueueDiscovery
from mailqueue.queues.handles import QueueHandles
from mailqueue.queues.job_reads import JobReads, listed_state
from mailqueue.queues.job_view import JobViews
from mailqueue.queues.job_writes import JobWrites
from mailqueue.queues.limits import QueueLimiter
from mailqueue.queues.schedules import Schedules

_CLEANABLE_STATES = ("completed", "failed", "delayed", "wait", "waiting", "active", "paused",
                     "prioritized")
# retry_failed and promote_delayed move this many jobs per bullmq call.
_BATCH = 1000


class QueueManager:
    """Creates queues, adds jobs, and carries out every queue-level operation."""

    def __init__(
        self,
        connection: dict[str, Any],
        client: aioredis.Redis,
        prefix: str = "bull",
        default_job_options: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.default_job_options = dict(default_job_options or {})
        self.discovery = QueueDiscovery(client, prefix)
        self.handles = QueueHandles(connection, client, prefix, self.default_job_options,
                                    self.discovery)
        self.counter = QueueCounter(client, self.handles)
        self.views = JobViews(client, self.handles)
        self.reads = JobReads(client, self.handles, self.counter)
        self.writes = JobWrites(client, self.handles)
        self.schedules = Schedules(self.handles)
        self.limiter = QueueLimiter(client, self.handles)
        self.alerts = QueueAlerts(client, prefix)

        # The manager's public API, each method answered by the collaborator that owns it.
        self.create_queue = self.handles.create_queue
        self.queue_exists = self.handles.queue_exists
        self.get_queue = self.handles.get_queue
        self.list_queues = self.discovery.list_queues
        self.unusable_queue_names = self.discovery.unusable_queue_names
        self.get_job_counts = self.counter.get_job_counts
        self.get_many_job_counts = self.counter.get_many_job_counts
        self.get_overview = self.counter.get_overview
        self.get_metrics = self.counter.get_metrics
        self.get_all_queue_metrics = self.counter.get_all_queue_metrics
        self.get_charts = self.counter.get_charts
        self.get_job = self.views.get_job
        self.get_job_view = self.views.get_job_view
        self.get_job_data_text = self.views.get_job_data_text
        self.get_job_log_page = self.views.get_job_log_page
        self.get_job_logs = self.views.get_job_logs
        self.get_jobs = self.reads.get_jobs
        self.get_job_summaries = self.reads.get_job_summaries
        self.search_jobs = self.reads.search_jobs
        self.find_job = self.reads.find_job
        self.get_last_stacktraces = self.reads.get_last_stacktraces
        self.get_latest_jobs = self.reads.get_latest_jobs
        self.add_job = self.writes.add_job
        self.add_jobs = self.writes.add_jobs
        self.retry_job = self.writes.retry_job
        self.promote_job = self.writes.promote_job
        self.remove_job = self.writes.remove_job
        self.update_job_data = self.writes.update_job_data
        self.duplicate_job = self.writes.duplicate_job
        self.change_delay = self.writes.change_delay
        self.change_priority = self.writes.change_priority
        self.schedule_job = self.schedules.schedule_job
        self.list_schedules = self.schedules.list_schedules
        self.remove_schedule = self.schedules.remove_schedule
        self.update_schedule = self.schedules.update_schedule
        self.run_schedule_now = self.schedules.run_schedule_now
        self.get_limits = self.limiter.get_limits
        self.set_global_concurrency = self.limiter.set_global_concurrency
        self.remove_global_concurrency = self.limiter.remove_global_concurrency
        self.set_global_rate_limit = self.limiter.set_global_rate_limit
        self.remove_global_rate_limit = self.limiter.remove_global_rate_limit
        self.get_queue_alerts = self.alerts.get_queue_alerts

    def keys(self, queue: str) -> Keys:
        """BullMQ's keys of `queue` (see keys.py)."""
        return self.handles.keys(queue)

    async def close(self) -> None:
        await self.discovery.close()
        await self.handles.close()

    # --- operations on a whole queue ------------------------------------------------------

    async def pause(self, queue: str) -> None:
        await (await self.get_queue(queue)).pause()

    async def resume(self, queue: str) -> None:
        await (await self.get_queue(queue)).resume()

    async def is_paused(self, queue: str) -> bool:
        return bool(await (await self.get_queue(queue)).isPaused())

    async def clean(self, queue: str, state: str = "completed", grace_ms: int = 0,
                    limit: int = 0) -> list[str]:
        """Remove jobs in `state` older than `grace_ms`; returns the removed ids."""
        if state not in _CLEANABLE_STATES:
            raise MailQueueError(f"Cannot clean state {state!r}")
        if grace_ms < 0 or limit < 0:
            raise MailQueueError("grace_ms and limit must be >= 0")
        q = await self.get_queue(queue)
        listed = await listed_state(q, state)
        if listed is None:  # `waiting` of a paused queue: its jobs are listed as paused
            return []
        removed = await q.clean(grace_ms, limit, "wait" if listed == "waiting" else listed)
        return [str(i) for i in removed or []]

    async def drain(self, queue: str, include_delayed: bool = False) -> None:
        await (await self.get_queue(queue)).drain(include_delayed)

    async def obliterate(self, queue: str, force: bool = False) -> None:
        q = await self.get_queue(queue)
        was_paused = bool(await q.isPaused())
        try:
            await q.obliterate(force)
        except Exception as exc:  # bullmq raises a bare Exception with its own message
            # bullmq pauses the queue before it checks for active jobs: undo that.
            if not was_paused:
                await q.resume()
            if "active" in str(exc):
                raise MailQueueError(
                    f"Cannot obliterate {queue!r}: it has active jobs; stop its workers "
                    "first, or pass force=True to remove them too"
                ) from None
            raise MailQueueError(f"Cannot obliterate {queue!r}: {exc}") from None
        await self._client.delete(self.keys(queue).meta)
        await self.handles.forget(queue)

    async def retry_failed(self, queue: str) -> int:
        """Move every failed job back to waiting; returns how many there were."""
        q = await self.get_queue(queue)
        count = (await self.get_job_counts(queue))["failed"]
        await q.retryJobs({"state": "failed", "count": _BATCH})
        return count

    async def promote_delayed(self, queue: str) -> int:
        q = await self.get_queue(queue)
        count = (await self.get_job_counts(queue))["delayed"]
        await q.promoteJobs({"count": _BATCH})
        return count
