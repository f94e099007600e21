"""Adding jobs and changing one job: retry, promote, remove, new data, a copy, its delay and
its priority. Every input is checked before anything is written."""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job, Queue
from bullmq.redis_connection import loadScript
from redis.exceptions import ResponseError

from mailqueue.errors import (
    InvalidJobOptionsError,
    JobNotFoundError,
    JobStateError,
    MailQueueError,
)
from mailqueue.job_options import (
    KNOWN_OPTIONS,
    MAX_PRIORITY,
    merge_job_options,
    validate_job_options,
    whole_number,
)
from mailqueue.queues.handles import QueueHandles
from mailqueue.redis_memory import is_redis_full, redis_full_error

MAX_DELAY_MS = 10 * 365 * 24 * 3600 * 1000

# What a duplicate must not inherit: it would be the same job, a repeat, a flow child or
# deduplicated away.
_NOT_DUPLICATED_OPTIONS = frozenset({
    "jobId", "repeat", "parent", "timestamp", "deduplication", "failParentOnFailure",
    "ignoreDependencyOnFailure", "removeDependencyOnFailure", "continueParentOnFailure",
})


class JobWrites:
    """Adds jobs to queues and carries out the actions on one job."""

    def __init__(self, client: aioredis.Redis, handles: QueueHandles) -> None:
        self._client = client
        self._handles = handles
        # bullmq's changeDelay script: shipped by bullmq 3.4.4 without the method that runs it.
        self._change_delay = client.register_script(loadScript("changeDelay-4.lua"))

    async def add_job(
        self, queue: str, name: str, data: Any = None, opts: dict[str, Any] | None = None
    ) -> Job:
        validate_job_options(opts or {})
        if not isinstance(name, str) or not name.strip():
            raise InvalidJobOptionsError("A job needs a non-empty name")
        check_json(data)
        q = self._handles.handle(queue)
        try:
            job = await q.add(name, data if data is not None else {}, merged_options(q, opts))
        except ResponseError as exc:
            if is_redis_full(exc):
                raise await redis_full_error(self._client, "the job was not added") from None
            raise
        self._handles.discovery.note(queue, True)
        return job

    async def add_jobs(self, queue: str, jobs: list[dict[str, Any]]) -> list[Job]:
        """Add many jobs in one pipeline: each item is {name, data, opts}.

        Every item is checked before anything is written, so a bad item adds nothing.
        """
        q = self._handles.handle(queue)
        prepared = [_bulk_item(q, index, item) for index, item in enumerate(jobs)]
        self._handles.discovery.note(queue, True)
        try:
            return await q.addBulk(prepared) if prepared else []
        except ResponseError as exc:  # one MULTI/EXEC: all of them or none
            if is_redis_full(exc):
                raise await redis_full_error(
                    self._client, f"none of the {len(prepared)} jobs was added"
                ) from None
            raise

    async def retry_job(self, queue: str, job_id: str) -> None:
        job = await self._job(queue, job_id)
        state = await job.queue.getJobState(job.id)
        if state not in ("failed", "completed"):
            raise MailQueueError(f"Job {job_id!r} is {state}; only failed or completed jobs retry")
        await job.retry(state)

    async def promote_job(self, queue: str, job_id: str) -> None:
        job = await self._job(queue, job_id)
        try:
            await job.promote()
        except Exception as exc:  # bullmq raises a bare Exception with its own message
            raise MailQueueError(f"Cannot promote job {job_id!r}: {exc}") from None

    async def remove_job(self, queue: str, job_id: str) -> None:
        job = await self._job(queue, job_id)
        try:
            await job.remove()
        except Exception as exc:
            raise MailQueueError(f"Cannot remove job {job_id!r}: {exc}") from None

    async def update_job_data(self, queue: str, job_id: str, data: Any) -> None:
        check_json(data)
        job = await self._job(queue, job_id)
        await job.updateData(data)

    async def duplicate_job(self, queue: str, job_id: str) -> Job:
        """A new job with the same name, data and options, minus what would tie it to the old
        one: its id, repeat, parent and deduplication settings."""
        job = await self._job(queue, job_id)
        opts = {k: v for k, v in dict(job.opts or {}).items()
                if k in KNOWN_OPTIONS and k not in _NOT_DUPLICATED_OPTIONS}
        return await self.add_job(queue, job.name, job.data, opts)

    async def change_delay(self, queue: str, job_id: str, delay_ms: Any) -> int:
        """Run the delayed job `delay_ms` from now (bullmq's Job.changeDelay, whose script
        Python's bullmq ships without the method). JobStateError unless the job is delayed."""
        ms = whole_number(delay_ms, "The delay (ms)", 0, MAX_DELAY_MS)
        q = await self._handles.get_queue(queue)
        keys = self._handles.keys(queue)
        result = await self._change_delay(
            keys=[keys.delayed, keys.meta, keys.marker, keys.events],
            args=[ms, str(int(time.time() * 1000)), job_id, keys.job(job_id)])
        if result == -1:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        if result == -3:
            state = await self._handles.job_state(q, job_id)
            raise JobStateError(f"Job {job_id!r} is {state}; only a delayed job's delay "
                                "can change")
        return ms

    async def change_priority(self, queue: str, job_id: str, priority: Any,
                              lifo: bool = False) -> int:
        """Give a waiting or prioritized job another priority (0: none; 1 is the highest);
        bullmq's Job.changePriority. JobStateError for a job in another state (bullmq would
        only rewrite the number there, which changes nothing)."""
        n = whole_number(priority, "The priority", 0, MAX_PRIORITY)
        q = await self._handles.get_queue(queue)
        state = await self._handles.job_state(q, job_id)
        if state == "unknown":
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        if state not in ("waiting", "prioritized", "paused"):
            raise JobStateError(f"Job {job_id!r} is {state}; only a waiting or prioritized "
                                "job's priority can change")
        job = await self._job(queue, job_id)
        try:
            await job.changePriority({"priority": n, "lifo": lifo})
        except Exception as exc:  # bullmq raises a bare Exception with its own message
            raise MailQueueError(f"Cannot change the priority of job {job_id!r}: {exc}"
                                 ) from None
        return n

    async def _job(self, queue: str, job_id: str) -> Job:
        q = await self._handles.get_queue(queue)
        job = await q.getJob(str(job_id))
        if job is None:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        return job


def merged_options(queue: Queue, opts: dict[str, Any] | None) -> dict[str, Any]:
    """A job's options over its queue's defaults (bullmq merges the queue's jobsOpts itself;
    a nested `backoff` is merged here too)."""
    return merge_job_options(queue.jobsOpts, opts or {})


def check_json(data: Any) -> None:
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidJobOptionsError(f"Job data must be JSON-serialisable: {exc}") from None


def _bulk_item(q: Queue, index: int, item: Any) -> dict[str, Any]:
    """One item of add_jobs, checked, with its options merged; the error names its index."""
    if not isinstance(item, dict):
        raise InvalidJobOptionsError(f"jobs[{index}] must be a dict {{name, data, opts}}")
    unknown = set(item) - {"name", "data", "opts"}
    if unknown:
        raise InvalidJobOptionsError(
            f"jobs[{index}] has unknown key(s) {', '.join(sorted(unknown))}; "
            "an item is {name, data, opts}"
        )
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidJobOptionsError(f"jobs[{index}] needs a non-empty 'name' string")
    opts = item.get("opts") or {}
    data = item.get("data")
    try:
        validate_job_options(opts)
        check_json(data)
    except InvalidJobOptionsError as exc:
        raise InvalidJobOptionsError(f"jobs[{index}]: {exc}") from None
    return {"name": name, "data": data if data is not None else {},
            "opts": merged_options(q, opts)}
