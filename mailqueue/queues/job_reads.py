"""Reading jobs for tables: rows without payloads, a bounded search, the newest jobs.

These reads never load a job's payload for a table row and cost the same on page 10,000 as
on page 1.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from bullmq import Queue

from mailqueue.errors import MailQueueError
from mailqueue.queues.counts import QueueCounter
from mailqueue.queues.handles import QueueHandles
from mailqueue.queues.job_view import job_info
from mailqueue.types import JOB_STATES, JobPage, JobSearch, JobSummary, SummaryPage

SORT_ORDERS = {"asc": True, "desc": False}
MAX_PER_PAGE = 500
# The fields of a job's row in a table: never its data, return value or stack traces.
_SUMMARY_FIELDS = ("name", "timestamp", "processedOn", "finishedOn", "attemptsMade", "atm",
                   "ats", "progress", "failedReason", "opts", "delay", "priority", "parentKey")
# A search by job data reads at most this many jobs of one state.
MAX_SEARCH_SCAN = 1000
# The newest jobs of a queue: this many of each state are read, then merged by timestamp.
LATEST_PER_STATE = 50
# The states "latest" merges, as bullmq names the lists and sets that hold them.
LATEST_STATES = ("active", "waiting", "paused", "prioritized", "delayed", "waiting-children",
                 "completed", "failed")


async def listed_state(q: Queue, state: str) -> str | None:
    """The bullmq state to range for `state`, None when it must list nothing.

    A paused queue's jobs stay in `wait` (only `meta` says paused); the counts count them
    as paused, so listing follows: `paused` reads `wait`, and `waiting` is empty.
    """
    if state not in ("waiting", "paused") or not await q.isPaused():
        return state
    return "waiting" if state == "paused" else None


async def _ranges(q: Queue, state: str | None, start: int, end: int, asc: bool) -> list[str]:
    if state is None:
        return []
    raw = await q.backend.getRanges([state], start, end, asc)
    return [i.decode() if isinstance(i, bytes) else str(i) for i in raw]


class JobReads:
    """Pages of job rows, bullmq's own job pages, the search and the newest jobs."""

    def __init__(self, client: aioredis.Redis, handles: QueueHandles,
                 counter: QueueCounter) -> None:
        self._client = client
        self._handles = handles
        self._counter = counter

    async def get_jobs(
        self, queue: str, state: str = "waiting", page: int = 1, per_page: int = 25,
        sort: str = "desc",
    ) -> JobPage:
        """One page of whole jobs (payloads included) in one state, as bullmq loads them."""
        _check_listing(state, page, per_page, sort)
        q = await self._handles.get_queue(queue)
        counts = await self._counter.get_job_counts(queue)
        start = (page - 1) * per_page
        listed = await listed_state(q, state)
        jobs = [] if listed is None else await q.getJobs(
            [listed], start, start + per_page - 1, SORT_ORDERS[sort]
        )
        return {
            "queue": queue, "state": state, "page": page, "per_page": per_page,
            "total": counts.get(state, 0),
            "jobs": [job_info(queue, job, state) for job in jobs],
        }

    # --- dashboard reads: job rows without payloads, a bounded search, many counts ------

    async def get_job_summaries(
        self, queue: str, state: str = "waiting", page: int = 1,
        per_page: int = 50, sort: str = "desc",
    ) -> SummaryPage:
        """One page of job rows in one state, without payloads: only that page's ids are ranged
        and only the listed fields of their hashes are read, so page 10,000 costs what page 1
        does and a 10 MB job payload is never loaded for a table row."""
        _check_listing(state, page, per_page, sort)
        q = await self._handles.get_queue(queue)
        start = (page - 1) * per_page
        listed = await listed_state(q, state)
        ids, counts = await asyncio.gather(
            _ranges(q, listed, start, start + per_page - 1, SORT_ORDERS[sort]),
            self._counter.get_job_counts(queue),
        )
        return {
            "queue": queue, "state": state, "page": page, "per_page": per_page, "sort": sort,
            "total": counts.get(state, 0), "counts": counts,
            "jobs": await self._read_summaries(queue, ids, state),
        }

    async def search_jobs(
        self, queue: str, state: str, text: str, field: str = "data",
        scan_limit: int = MAX_SEARCH_SCAN, max_results: int = 100, sort: str = "desc",
        start: int = 0,
    ) -> JobSearch:
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
        q = await self._handles.get_queue(queue)
        listed = await listed_state(q, state)
        ids, counts = await asyncio.gather(
            _ranges(q, listed, start, start + scan_limit - 1, SORT_ORDERS[sort]),
            self._counter.get_job_counts(queue),
        )
        ids = ids[:scan_limit]
        needle = text.casefold()
        keys = self._handles.keys(queue)
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), field)
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
            pipe.hexists(self._handles.keys(queue).job(job_id), "timestamp")
        # A list or a stream under that name answers WRONGTYPE: no job there either.
        found = await pipe.execute(raise_on_error=False)
        return [queue for queue, hit in zip(queues, found, strict=True)
                if not isinstance(hit, Exception) and hit]

    async def get_last_stacktraces(self, queue: str, ids: list[str], max_chars: int = 4000
                                   ) -> dict[str, tuple[str, bool]]:
        """Each job's newest stack trace (its last failed attempt's), cut at `max_chars`,
        with whether it was cut; jobs without one are left out. One round trip for all the
        ids (a page of the failed list), and only the `stacktrace` field of each hash."""
        keys = self._handles.keys(queue)
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "stacktrace")
        values = await pipe.execute() if ids else []
        traces: dict[str, tuple[str, bool]] = {}
        for job_id, raw in zip(ids, values, strict=True):
            trace = _last_trace(raw)
            if trace:
                traces[job_id] = (trace[:max_chars], len(trace) > max_chars)
        return traces

    async def get_latest_jobs(self, queue: str, limit: int = LATEST_PER_STATE
                              ) -> list[JobSummary]:
        """The newest `limit` jobs of the queue by creation time, across states: the newest
        `limit` ids of each state's list or set (bounded reads, whatever the queue's size),
        their summaries, merged newest first. Each row says its state."""
        limit = max(1, min(limit, 500))
        q = await self._handles.get_queue(queue)

        async def newest(state: str) -> tuple[str, list[str]]:
            return state, await _ranges(q, await listed_state(q, state), 0, limit - 1, False)

        found = await asyncio.gather(*(newest(s) for s in LATEST_STATES))
        seen: set[str] = set()
        rows: list[JobSummary] = []
        for state, ids in found:
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            rows += await self._read_summaries(queue, fresh, state)
        rows.sort(key=lambda r: (r["timestamp"], r["id"]), reverse=True)
        return rows[:limit]

    async def _read_summaries(self, queue: str, ids: list[str],
                              state: str | None) -> list[JobSummary]:
        keys = self._handles.keys(queue)
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), list(_SUMMARY_FIELDS))
        rows = await pipe.execute() if ids else []
        # A job removed between the range read and this one has an empty hash: skip it.
        return [_summary(queue, job_id, state, values)
                for job_id, values in zip(ids, rows, strict=True) if values[0] is not None
                or values[1] is not None]


def _summary(queue: str, job_id: str, state: str | None, values: list[Any]) -> JobSummary:
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
