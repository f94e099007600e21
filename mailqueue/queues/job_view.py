"""One job, read for a person: the job page, its data download and its log.

A job's payload may be 10 MB: these reads never parse one larger than the preview.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job

from mailqueue.errors import JobNotFoundError
from mailqueue.lua import load_script
from mailqueue.queues.handles import QueueHandles
from mailqueue.types import JobInfo, JobView, LogPage

DATA_PREVIEW_BYTES = 64 * 1024

# Every field of a job hash but `data`, which get_job_view reads apart (it may be 10 MB).
_JOB_VIEW_FIELDS = (
    "name", "opts", "progress", "delay", "priority", "timestamp", "finishedOn", "processedOn",
    "rjk", "ats", "failedReason", "atm", "attemptsMade", "stc", "defa", "returnvalue",
    "stacktrace", "parentKey", "parent",
)


def job_info(queue_name: str, job: Job, state: str | None = None) -> JobInfo:
    """A bullmq Job as a plain dict the CLI and dashboard can use."""
    return {
        "id": str(job.id),
        "queue": queue_name,
        "name": job.name,
        "data": job.data,
        "opts": dict(job.opts or {}),
        "progress": job.progress,
        "attempts_made": int(job.attemptsMade or 0),
        "attempts_started": int(job.attemptsStarted or 0),
        "timestamp": int(job.timestamp or 0),
        "processed_on": int(job.processedOn) if job.processedOn else None,
        "finished_on": int(job.finishedOn) if job.finishedOn else None,
        "delay": int(job.delay or 0),
        "priority": int(job.priority or 0),
        "failed_reason": job.failedReason,
        "stacktrace": list(job.stacktrace or []),
        "return_value": job.returnvalue,
        "parent_key": job.parentKey,
        "state": state,
    }


class JobViews:
    """Reads of one job: as bullmq loads it, as the job page shows it, its data, its log."""

    def __init__(self, client: aioredis.Redis, handles: QueueHandles) -> None:
        self._client = client
        self._handles = handles
        self._data_prefix = load_script(client, "job_data_prefix")

    async def get_job(self, queue: str, job_id: str, with_state: bool = True) -> JobInfo:
        q = await self._handles.get_queue(queue)
        # The state before the hash: a job finishing between the two reads then shows a
        # hash as new as its state or newer. Read the other way round, a fast worker made
        # "completed" appear beside the hash of the running job (no return value yet).
        state = await self._handles.job_state(q, str(job_id)) if with_state else None
        job = await q.getJob(str(job_id))
        if job is None:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        return job_info(queue, job, state)

    async def get_job_view(self, queue: str, job_id: str, data_limit: int | None = None
                           ) -> JobView:
        """A job with its state, without parsing a payload larger than `data_limit` bytes.

        A small payload comes back parsed in `data`; a larger one comes back as `data: None`
        and `data_preview`, its first `data_limit` bytes of JSON text (cut on a character
        boundary by Redis itself, so a 10 MB payload never crosses the wire). `data_size` is
        the payload's size in bytes either way. The limit defaults to DATA_PREVIEW_BYTES.
        """
        limit = DATA_PREVIEW_BYTES if data_limit is None else data_limit
        q = await self._handles.get_queue(queue)
        key = self._handles.keys(queue).job(job_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.hstrlen(key, "data")
        pipe.hmget(key, list(_JOB_VIEW_FIELDS))
        size, values = await pipe.execute()
        raw = {f: v for f, v in zip(_JOB_VIEW_FIELDS, values, strict=True) if v is not None}
        if "name" not in raw and "timestamp" not in raw:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        job = Job.fromJSON(q, raw, str(job_id))
        state = await self._handles.job_state(q, str(job_id))
        data: Any = None
        preview: str | None = None
        if int(size) <= limit:
            text = await self._client.hget(key, "data")
            try:
                data = json.loads(text) if text else {}
            except ValueError:  # not JSON (a hand-written hash): show the text as it is
                preview = str(text)
        else:
            head = await self._data_prefix(keys=[key], args=[limit])
            preview = str(head) if head is not None else None
        info = job_info(queue, job, state)
        info["data"] = data
        return JobView(**info, data_size=int(size), data_truncated=int(size) > limit,
                       data_preview=preview)

    async def get_job_data_text(self, queue: str, job_id: str) -> str:
        """A job's data exactly as stored: JSON text, unparsed (for a download)."""
        await self._handles.get_queue(queue)
        key = self._handles.keys(queue).job(job_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.exists(key)
        pipe.hget(key, "data")
        exists, text = await pipe.execute()
        if not exists:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        return str(text) if text is not None else "{}"

    async def get_job_log_page(self, queue: str, job_id: str, start: int = 0, end: int = -1
                               ) -> LogPage:
        """Log lines `start`..`end` (inclusive, negative from the end) and the total count."""
        await self._handles.get_queue(queue)
        # Not bullmq's getJobLogs: it reads in MULTI/EXEC, and Redis at maxmemory refuses
        # every command queued in a MULTI, reads included — the job page would fail.
        key = self._handles.keys(queue).logs(job_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.lrange(key, start, end)
        pipe.llen(key)
        logs, count = await pipe.execute()
        return {"logs": [str(line) for line in logs], "count": int(count)}

    async def get_job_logs(self, queue: str, job_id: str, start: int = 0, end: int = -1
                           ) -> list[str]:
        return (await self.get_job_log_page(queue, job_id, start, end))["logs"]
