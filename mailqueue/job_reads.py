"""Reading jobs for a person: table rows without payloads, a bounded search, one job's page.

Mixed into QueueManager. These reads never load a job's payload for a table row, never
parse a payload larger than the preview, and cost the same on page 10,000 as on page 1.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from bullmq import Job, Queue

from mailqueue.errors import JobNotFoundError, MailQueueError
from mailqueue.types import JOB_STATES, JobInfo

SORT_ORDERS = {"asc": True, "desc": False}
MAX_PER_PAGE = 500
# The fields of a job's row in a table: never its data, return value or stack traces.
_SUMMARY_FIELDS = ("name", "timestamp", "processedOn", "finishedOn", "attemptsMade", "atm",
                   "ats", "progress", "failedReason", "opts", "delay", "priority", "parentKey")
# A search by job data reads at most this many jobs of one state.
MAX_SEARCH_SCAN = 1000


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


async def listed_state(q: Queue, state: str) -> str | None:
    """The bullmq state to range for `state`, None when it must list nothing.

    A paused queue's jobs stay in `wait` (only `meta` says paused); get_job_counts counts them
    as paused, so listing follows: `paused` reads `wait`, and `waiting` is empty.
    """
    if state not in ("waiting", "paused") or not await q.isPaused():
        return state
    return "waiting" if state == "paused" else None


async def _ranges(q: Queue, state: str | None, start: int, end: int, asc: bool) -> list[Any]:
    if state is None:
        return []
    return list(await q.backend.getRanges([state], start, end, asc))



class JobReads:
    """The job reads of QueueManager (a mixin: it lends `key`, `get_queue` and the counts)."""

    _client: aioredis.Redis

    if TYPE_CHECKING:
        def key(self, queue: str, *parts: str) -> str: ...
        async def get_queue(self, name: str) -> Queue: ...
        async def get_job_counts(self, queue: str) -> dict[str, int]: ...
        async def _job_state(self, q: Queue, job_id: str) -> str: ...

    # --- one job, read for a person (the dashboard's job page) ----------------------------

    async def get_job_view(self, queue: str, job_id: str, data_limit: int | None = None
                           ) -> JobView:
        """A job with its state, without parsing a payload larger than `data_limit` bytes.

        A small payload comes back parsed in `data`; a larger one comes back as `data: None`
        and `data_preview`, its first `data_limit` bytes of JSON text (cut on a character
        boundary by Redis itself, so a 10 MB payload never crosses the wire). `data_size` is
        the payload's size in bytes either way. The limit defaults to DATA_PREVIEW_BYTES.
        """
        limit = DATA_PREVIEW_BYTES if data_limit is None else data_limit
        q = await self.get_queue(queue)
        key = self.key(queue, str(job_id))
        pipe = self._client.pipeline(transaction=False)
        pipe.hstrlen(key, "data")
        pipe.hmget(key, list(_JOB_VIEW_FIELDS))
        size, values = await pipe.execute()
        raw = {f: v for f, v in zip(_JOB_VIEW_FIELDS, values, strict=True) if v is not None}
        if "name" not in raw and "timestamp" not in raw:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        job = Job.fromJSON(q, raw, str(job_id))
        state = await self._job_state(q, str(job_id))
        data: Any = None
        preview: str | None = None
        if int(size) <= limit:
            text = await self._client.hget(key, "data")
            try:
                data = json.loads(text) if text else {}
            except ValueError:  # not JSON (a hand-written hash): show the text as it is
                preview = str(text)
        else:
            head = await self._client.eval(_DATA_PREFIX_SCRIPT, 1, key, limit)
            preview = str(head) if head is not None else None
        info = job_info(queue, job, state)
        info["data"] = data
        return JobView(**info, data_size=int(size), data_truncated=int(size) > limit,
                       data_preview=preview)

    async def get_job_data_text(self, queue: str, job_id: str) -> str:
        """A job's data exactly as stored: JSON text, unparsed (for a download)."""
        await self.get_queue(queue)
        key = self.key(queue, str(job_id))
        pipe = self._client.pipeline(transaction=False)
        pipe.exists(key)
        pipe.hget(key, "data")
        exists, text = await pipe.execute()
        if not exists:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        return str(text) if text is not None else "{}"

    async def get_job_log_page(self, queue: str, job_id: str, start: int = 0, end: int = -1
                               ) -> dict[str, Any]:
        """Log lines `start`..`end` (inclusive, negative from the end) and the total count."""
        await self.get_queue(queue)
        # Not bullmq's getJobLogs: it reads in MULTI/EXEC, and Redis at maxmemory refuses
        # every command queued in a MULTI, reads included — the job page would fail.
        key = self.key(queue, str(job_id), "logs")
        pipe = self._client.pipeline(transaction=False)
        pipe.lrange(key, start, end)
        pipe.llen(key)
        logs, count = await pipe.execute()
        return {"logs": [str(line) for line in logs], "count": int(count)}

    # --- dashboard reads: job rows without payloads, a bounded search, many counts ------

    async def get_job_summaries(
        self, queue: str, state: str = "waiting", page: int = 1,
        per_page: int = 50, sort: str = "desc",
    ) -> dict[str, Any]:
        """One page of job rows in one state, without payloads: only that page's ids are ranged
        and only the listed fields of their hashes are read, so page 10,000 costs what page 1
        does and a 10 MB job payload is never loaded for a table row."""
        _check_listing(state, page, per_page, sort)
        q = await self.get_queue(queue)
        start = (page - 1) * per_page
        listed = await listed_state(q, state)
        ids, counts = await asyncio.gather(
            _ranges(q, listed, start, start + per_page - 1, SORT_ORDERS[sort]),
            self.get_job_counts(queue),
        )
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        return {
            "queue": queue, "state": state, "page": page, "per_page": per_page, "sort": sort,
            "total": counts.get(state, 0), "counts": counts,
            "jobs": await self._read_summaries(queue, ids, state),
        }

    async def search_jobs(
        self, queue: str, state: str, text: str, field: str = "data",
        scan_limit: int = MAX_SEARCH_SCAN, max_results: int = 100, sort: str = "desc",
        start: int = 0,
    ) -> dict[str, Any]:
        """Jobs of one state whose name or data contains `text` (case-insensitive).

        A bounded scan: at most `scan_limit` jobs of the state are read (newest first by
        default) from position `start`, and the answer says which were searched out of how
        many there are, and where the next scan starts (`next_start`; None at the end).
        """
        if field not in ("data", "name"):
            raise MailQueueError("field must be 'data' or 'name'")
        _check_listing(state, 1, 1, sort)
        if not text:
            raise MailQueueError("Give the text to search for")
        scan_limit = max(1, min(scan_limit, MAX_SEARCH_SCAN))
        if start < 0:
            raise MailQueueError("start must be 0 or more")
        q = await self.get_queue(queue)
        listed = await listed_state(q, state)
        ids, counts = await asyncio.gather(
            _ranges(q, listed, start, start + scan_limit - 1, SORT_ORDERS[sort]),
            self.get_job_counts(queue),
        )
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ids][:scan_limit]
        needle = text.casefold()
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.key(queue, job_id), field)
        values = await pipe.execute() if ids else []
        matched = [job_id for job_id, value in zip(ids, values, strict=True)
                   if value is not None and _contains(value, needle, field == "data")]
        return {
            "queue": queue, "state": state, "field": field, "text": text,
            "scanned": len(ids), "total": counts.get(state, 0), "counts": counts,
            "matched": len(matched), "start": start,
            "next_start": (start + len(ids)
                           if len(ids) == scan_limit and start + len(ids) < counts.get(state, 0)
                           else None),
            "jobs": await self._read_summaries(queue, matched[:max_results], state),
        }

    async def find_job(self, job_id: str, queues: list[str]) -> list[str]:
        """The queues among `queues` that hold a job with this id, in their order: one round
        trip for all. A key of the queue itself that the id happens to name (`meta`, `wait`,
        `events`...) is no job: a job's hash always has a `timestamp`."""
        if not job_id or not queues:
            return []
        pipe = self._client.pipeline(transaction=False)
        for queue in queues:
            pipe.hexists(self.key(queue, job_id), "timestamp")
        # A list or a stream under that name answers WRONGTYPE: no job there either.
        found = await pipe.execute(raise_on_error=False)
        return [queue for queue, hit in zip(queues, found, strict=True)
                if not isinstance(hit, Exception) and hit]

    async def get_last_stacktraces(self, queue: str, ids: list[str], max_chars: int = 4000
                                   ) -> dict[str, tuple[str, bool]]:
        """Each job's newest stack trace (its last failed attempt's), cut at `max_chars`,
        with whether it was cut; jobs without one are left out. One round trip for all the
        ids (a page of the failed list), and only the `stacktrace` field of each hash."""
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.key(queue, job_id), "stacktrace")
        values = await pipe.execute() if ids else []
        traces: dict[str, tuple[str, bool]] = {}
        for job_id, raw in zip(ids, values, strict=True):
            trace = _last_trace(raw)
            if trace:
                traces[job_id] = (trace[:max_chars], len(trace) > max_chars)
        return traces

    async def _read_summaries(self, queue: str, ids: list[str],
                              state: str | None) -> list[dict[str, Any]]:
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.key(queue, job_id), list(_SUMMARY_FIELDS))
        rows = await pipe.execute() if ids else []
        # A job removed between the range read and this one has an empty hash: skip it.
        return [_summary(queue, job_id, state, values)
                for job_id, values in zip(ids, rows, strict=True) if values[0] is not None
                or values[1] is not None]


def _summary(queue: str, job_id: str, state: str | None, values: list[Any]) -> dict[str, Any]:
    """A job's table row from its hash fields (no data, return value or stack traces)."""
    raw = dict(zip(_SUMMARY_FIELDS, values, strict=True))

    def number(field: str) -> int | None:
        value = raw.get(field)
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    try:
        opts = json.loads(raw["opts"]) if raw.get("opts") else {}
    except ValueError:
        opts = {}
    try:
        progress = json.loads(raw["progress"]) if raw.get("progress") else 0
    except ValueError:
        progress = raw.get("progress")
    attempts = opts.get("attempts") if isinstance(opts, dict) else None
    return {
        "id": job_id, "queue": queue, "name": raw.get("name") or "", "state": state,
        "progress": progress,
        "attempts_made": number("attemptsMade") or number("atm") or 0,
        "attempts_started": number("ats") or 0,
        "attempts": attempts if isinstance(attempts, int) else 1,
        "timestamp": number("timestamp") or 0,
        "processed_on": number("processedOn"), "finished_on": number("finishedOn"),
        "delay": number("delay") or 0, "priority": number("priority") or 0,
        "failed_reason": raw.get("failedReason") or None,
        "parent_key": raw.get("parentKey") or None,
    }


def _last_trace(raw: Any) -> str:
    """The newest entry of a job's `stacktrace` field (a JSON list of strings, oldest first);
    the text itself when another producer wrote something else there."""
    if not raw:
        return ""
    try:
        traces = json.loads(raw)
    except ValueError:
        return str(raw)
    if isinstance(traces, list):
        texts = [str(t) for t in traces if t]
        return texts[-1] if texts else ""
    return str(traces) if traces else ""


def _check_listing(state: str, page: int, per_page: int, sort: str) -> None:
    if state not in JOB_STATES:
        raise MailQueueError(f"Unknown state {state!r}; one of {', '.join(JOB_STATES)}")
    if sort not in SORT_ORDERS:
        raise MailQueueError("sort must be 'asc' or 'desc'")
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise MailQueueError(f"page must be >= 1 and per_page within 1..{MAX_PER_PAGE}")


def _contains(value: str, needle: str, is_json: bool) -> bool:
    if needle in value.casefold():
        return True
    if is_json and "\\u" in value:  # Python writes non-ASCII as \u escapes: compare decoded
        try:
            decoded = json.dumps(json.loads(value), ensure_ascii=False)
        except ValueError:
            return False
        return needle in decoded.casefold()
    return False


# --- the job page's reads ------------------------------------------------------------------

DATA_PREVIEW_BYTES = 64 * 1024

# Every field of a job hash but `data`, which get_job_view reads apart (it may be 10 MB).
_JOB_VIEW_FIELDS = (
    "name", "opts", "progress", "delay", "priority", "timestamp", "finishedOn", "processedOn",
    "rjk", "ats", "failedReason", "atm", "attemptsMade", "stc", "defa", "returnvalue",
    "stacktrace", "parentKey", "parent",
)

# The first ARGV[1] bytes of a job's data, cut before a UTF-8 continuation byte so that the
# text stays decodable; computed inside Redis so a large payload never crosses the wire.
_DATA_PREFIX_SCRIPT = """
local v = redis.call('HGET', KEYS[1], 'data')
if not v then return false end
local n = tonumber(ARGV[1])
if #v <= n then return v end
local b = string.byte(v, n + 1)
while n > 0 and b >= 128 and b < 192 do
  n = n - 1
  b = string.byte(v, n + 1)
end
return string.sub(v, 1, n)
"""

class JobView(JobInfo):
    """A job for a person to read: its payload parsed only when small."""

    data_size: int
    data_truncated: bool
    data_preview: str | None
