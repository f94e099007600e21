"""QueueManager: owns the bullmq Queues, reads and changes queue state.

The one place (with flows.py) that knows BullMQ's key layout in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job, Queue
from redis.exceptions import NoScriptError, ResponseError

from mailqueue import queue_stats
from mailqueue.cluster import bullmq_connection
from mailqueue.errors import (
    InvalidJobOptionsError,
    InvalidScheduleError,
    JobNotFoundError,
    MailQueueError,
    UnknownQueueError,
)
from mailqueue.job_options import (
    KNOWN_OPTIONS,
    merge_job_options,
    validate_job_options,
    validate_queue_name,
)
from mailqueue.job_reads import (
    MAX_PER_PAGE,
    SORT_ORDERS,
    JobReads,
    job_info,
    listed_state,
)
from mailqueue.queue_alerts import QueueAlerts
from mailqueue.queue_controls import QueueControls
from mailqueue.redis_memory import is_redis_full, redis_full_error
from mailqueue.types import JOB_STATES, JobInfo, JobPage, ScheduleInfo

log = logging.getLogger(__name__)

# Keys that exist for any queue BullMQ (Node or Python) has written to; discovery scans them.
_QUEUE_MARKER_SUFFIXES = ("meta", "id", "events", "wait", "completed", "failed", "delayed")
_CLEANABLE_STATES = ("completed", "failed", "delayed", "wait", "waiting", "active", "paused",
                     "prioritized")
_DISCOVERY_CACHE_S = 2.0
# A discovery scan walks the whole keyspace (a million waiting jobs are a million keys, about
# a second of Redis per scan): the cached list lives at least this many times the last scan.
_DISCOVERY_COST_FACTOR = 10


class QueueManager(JobReads, QueueAlerts, QueueControls):
    """Creates queues, adds jobs, and carries out every queue-level operation."""

    def __init__(
        self,
        connection: dict[str, Any],
        client: aioredis.Redis,
        prefix: str = "bull",
        default_job_options: dict[str, Any] | None = None,
    ) -> None:
        self._connection = connection
        self._client = client
        self.prefix = prefix
        self.default_job_options = dict(default_job_options or {})
        self._queues: dict[str, Queue] = {}
        self._closed = False
        self._counts_sha: str | None = None  # bullmq's getCounts script, loaded once
        self._discovered: tuple[float, list[str]] | None = None
        # Names found in Redis that no queue handle accepts (a producer wrote a 10,000
        # character name, or spaces around it): listed apart, so they cannot fail the rest.
        self._unusable: list[str] = []
        self._discovery: asyncio.Task[list[str]] | None = None
        self._discovery_ttl = _DISCOVERY_CACHE_S
        # Queues this process made or obliterated while a scan ran, applied to its result.
        self._noted: dict[str, bool] = {}

    # --- queues ---------------------------------------------------------------------------

    def key(self, queue: str, *parts: str) -> str:
        return ":".join((self.prefix, queue, *parts))

    async def create_queue(self, name: str, **default_job_options: Any) -> Queue:
        """Create (or return) the queue `name`; idempotent.

        The queue's `meta` hash is written so that an empty queue is discoverable, exactly as
        BullMQ itself writes it on the first add.
        """
        queue = self._queue_handle(name)
        if default_job_options:
            validate_job_options(default_job_options)
            queue.jobsOpts = merge_job_options(self.default_job_options, default_job_options)
        await self._client.hsetnx(self.key(name, "meta"), "opts.maxLenEvents", 10000)
        self._note_queue(name, True)
        return queue

    def _queue_handle(self, name: str) -> Queue:
        validate_queue_name(name)
        if self._closed:
            raise MailQueueError("The queue manager is closed")
        queue = self._queues.get(name)
        if queue is None:
            queue = Queue(
                name,
                {
                    "connection": bullmq_connection(self._connection),
                    "prefix": self.prefix,
                    "defaultJobOptions": dict(self.default_job_options),
                },
            )
            self._queues[name] = queue
        return queue

    async def queue_exists(self, name: str) -> bool:
        validate_queue_name(name)
        pipe = self._client.pipeline(transaction=False)
        for suffix in _QUEUE_MARKER_SUFFIXES:
            pipe.exists(self.key(name, suffix))
        return any(await pipe.execute())

    async def get_queue(self, name: str) -> Queue:
        """The queue `name`; UnknownQueueError when no such queue exists under the prefix."""
        if name in self._queues or await self.queue_exists(name):
            return self._queue_handle(name)
        raise UnknownQueueError(f"No queue named {name!r} under prefix {self.prefix!r}")

    async def list_queues(self, refresh: bool = False) -> list[str]:
        """Every BullMQ queue under the prefix, Node-made ones included, sorted by name.

        Discovery SCANs the whole keyspace, which costs about a second of Redis per million
        jobs, so it is kept off the request path: concurrent callers share one scan, a cached
        list is answered at once while a stale one is refreshed in the background, and the
        list stays fresh for `_DISCOVERY_CACHE_S` or ten times what the last scan took,
        whichever is longer. Queues made or obliterated by this process show at once;
        `refresh=True` waits for a scan of its own.
        """
        if refresh:
            return list(await self._scan_queue_names())
        cached = self._discovered
        if cached is None:
            if self._discovery is None or self._discovery.done():
                self._discovery = asyncio.create_task(self._scan_queue_names(),
                                                      name="mailqueue-queue-discovery")
            # Shielded: a caller that goes away must not cancel the scan the others await.
            return list(await asyncio.shield(self._discovery))
        if time.monotonic() - cached[0] >= self._discovery_ttl and (
                self._discovery is None or self._discovery.done()):
            self._discovery = asyncio.create_task(self._refresh_in_background(),
                                                  name="mailqueue-queue-discovery")
        return list(cached[1])

    async def _refresh_in_background(self) -> list[str]:
        try:
            return await self._scan_queue_names()
        except Exception as exc:  # Redis away: keep the list we have; the next call retries
            log.warning("Queue discovery failed (%s); keeping the last list", exc)
            return list(self._discovered[1]) if self._discovered else []

    async def _scan_queue_names(self) -> list[str]:
        started = time.monotonic()
        self._noted = {}
        # Only what Redis holds counts: a handle made by a lookup is not a queue. On a
        # cluster, redis-py's scan_iter walks every master.
        # One pass over the keyspace for the three marker keys (`meta`, `id`, `events`): the
        # pattern lets through a few other keys, which the suffix test below leaves out.
        names: set[str] = set()
        unusable: set[str] = set()
        head = f"{self.prefix}:"
        async for key in self._client.scan_iter(match=f"{_glob_escape(head)}*:[mie][edv]*",
                                                count=1000):
            for suffix in ("meta", "id", "events"):
                if key.endswith(f":{suffix}"):
                    name = key[len(head): -len(suffix) - 1]
                    # A job key like bull:q:123 never ends in :meta; a name with ':' is not a
                    # queue.
                    if name and ":" not in name:
                        (names if _usable_queue_name(name) else unusable).add(name)
        for name, exists in self._noted.items():
            (names.add if exists else names.discard)(name)
        result = sorted(names)
        finished = time.monotonic()
        self._discovered = (finished, result)
        self._unusable = sorted(unusable)
        self._discovery_ttl = max(_DISCOVERY_CACHE_S,
                                  _DISCOVERY_COST_FACTOR * (finished - started))
        return result

    def unusable_queue_names(self) -> list[str]:
        """Queue-like names the last discovery found but left out of `list_queues`, because
        no queue can have them (see `validate_queue_name`): over 200 characters, or with
        spaces around. Shown to operators as a notice, never used as a queue."""
        return list(self._unusable)

    def _note_queue(self, name: str, exists: bool) -> None:
        """A queue this process just made (or obliterated): the cached list follows at once,
        without a new scan of the keyspace."""
        self._noted[name] = exists
        if self._discovered is not None:
            at, names = self._discovered
            self._discovered = (at, sorted(set(names) | {name} if exists
                                           else set(names) - {name}))

    async def close(self) -> None:
        if self._discovery is not None and not self._discovery.done():
            self._discovery.cancel()
            with contextlib.suppress(BaseException):
                await self._discovery
        # Each handle owns a Redis client. A render still running during shutdown may make
        # one while the others close: refuse new ones from now on, and close until none is
        # left (an unclosed client is a ResourceWarning when the collector finds it).
        self._closed = True
        while self._queues:
            queues, self._queues = list(self._queues.values()), {}
            await asyncio.gather(*(q.close() for q in queues), return_exceptions=True)

    # --- jobs -----------------------------------------------------------------------------

    async def add_job(
        self, queue: str, name: str, data: Any = None, opts: dict[str, Any] | None = None
    ) -> Job:
        validate_job_options(opts or {})
        if not isinstance(name, str) or not name.strip():
            raise InvalidJobOptionsError("A job needs a non-empty name")
        _check_json(data)
        q = self._queue_handle(queue)
        try:
            job = await q.add(name, data if data is not None else {}, self._merged(q, opts))
        except ResponseError as exc:
            if is_redis_full(exc):
                raise await redis_full_error(self._client, "the job was not added") from None
            raise
        self._note_queue(queue, True)
        return job

    async def add_jobs(self, queue: str, jobs: list[dict[str, Any]]) -> list[Job]:
        """Add many jobs in one pipeline: each item is {name, data, opts}.

        Every item is checked before anything is written, so a bad item adds nothing.
        """
        q = self._queue_handle(queue)
        prepared = []
        for index, item in enumerate(jobs):
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
                _check_json(data)
            except InvalidJobOptionsError as exc:
                raise InvalidJobOptionsError(f"jobs[{index}]: {exc}") from None
            prepared.append(
                {"name": name, "data": data if data is not None else {},
                 "opts": self._merged(q, opts)}
            )
        self._note_queue(queue, True)
        try:
            return await q.addBulk(prepared) if prepared else []
        except ResponseError as exc:  # one MULTI/EXEC: all of them or none
            if is_redis_full(exc):
                raise await redis_full_error(
                    self._client, f"none of the {len(prepared)} jobs was added"
                ) from None
            raise

    def _merged(self, queue: Queue, opts: dict[str, Any] | None) -> dict[str, Any]:
        # bullmq merges queue.jobsOpts itself; nested backoff is merged here too.
        return merge_job_options(queue.jobsOpts, opts or {})

    async def get_job(self, queue: str, job_id: str, with_state: bool = True) -> JobInfo:
        q = await self.get_queue(queue)
        # The state before the hash: a job finishing between the two reads then shows a
        # hash as new as its state or newer. Read the other way round, a fast worker made
        # "completed" appear beside the hash of the running job (no return value yet).
        state = await self._job_state(q, str(job_id)) if with_state else None
        job = await q.getJob(str(job_id))
        if job is None:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        return job_info(queue, job, state)

    async def _job_state(self, q: Queue, job_id: str) -> str:
        state = str(await q.getJobState(job_id))
        if state == "waiting" and await q.isPaused():
            return "paused"
        return state

    async def _job(self, queue: str, job_id: str) -> Job:
        q = await self.get_queue(queue)
        job = await q.getJob(str(job_id))
        if job is None:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        return job

    async def get_jobs(
        self, queue: str, state: str = "waiting", page: int = 1, per_page: int = 25,
        sort: str = "desc",
    ) -> JobPage:
        """One page of jobs in one state. Only that page's job hashes are read."""
        if state not in JOB_STATES:
            raise MailQueueError(f"Unknown state {state!r}; one of {', '.join(JOB_STATES)}")
        if sort not in SORT_ORDERS:
            raise MailQueueError("sort must be 'asc' or 'desc'")
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise MailQueueError(f"page must be >= 1 and per_page within 1..{MAX_PER_PAGE}")
        q = await self.get_queue(queue)
        counts = await self.get_job_counts(queue)
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

    async def get_job_counts(self, queue: str) -> dict[str, int]:
        """Counts for every state, `paused` included (bullmq leaves it out by default).

        BullMQ keeps the jobs of a paused queue in its `wait` list and only flags the queue
        as paused in `meta`; a person expects them counted as paused, so they are.
        """
        await self.get_queue(queue)
        return (await self._read_counts([queue]))[queue][0]

    async def _read_counts(self, names: list[str]) -> dict[str, tuple[dict[str, int], bool]]:
        """Counts and the paused flag of many queues in ONE round trip: a pipeline of
        bullmq's own `getCounts` script and an HEXISTS of `meta` per queue (rather than two
        round trips per queue, which made a page with the sidebar cost ~50 of them)."""
        replies = await self._counts_pipeline(names)
        return {name: _parse_counts(replies[2 * i], replies[2 * i + 1])
                for i, name in enumerate(names)}

    async def _counts_pipeline(self, names: list[str], series_now_ms: int | None = None
                               ) -> list[Any]:
        """The replies of one pipeline: per queue, bullmq's `getCounts` script and an HEXISTS
        of `meta` (paused); with `series_now_ms`, also the queue's last-hour throughput
        series (queue_stats.HOUR ending then; 3 replies per queue then, 2 otherwise)."""
        if not names:
            return []
        kinds = ["wait" if state == "waiting" else state for state in JOB_STATES]
        for attempt in (1, 2):
            if self._counts_sha is None:
                source = self._queue_handle(names[0]).scripts.commands["getCounts"].script
                self._counts_sha = await self._client.script_load(source)
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.evalsha(self._counts_sha, 1, self.key(name, ""), *kinds)
                pipe.hexists(self.key(name, "meta"), "paused")
                if series_now_ms is not None:
                    queue_stats.queue_series_command(pipe, self.prefix, name,
                                                     queue_stats.HOUR, series_now_ms)
            try:
                replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:  # Redis restarted or its scripts were flushed: load again
                self._counts_sha = None
                if series_now_ms is not None:
                    await queue_stats.load_script(self._client)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def get_job_logs(self, queue: str, job_id: str, start: int = 0, end: int = -1
                           ) -> list[str]:
        return list((await self.get_job_log_page(queue, job_id, start, end))["logs"])

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
        _check_json(data)
        job = await self._job(queue, job_id)
        await job.updateData(data)

    async def duplicate_job(self, queue: str, job_id: str) -> Job:
        """A new job with the same name, data and options, minus what would tie it to the old
        one: its id, repeat, parent and deduplication settings."""
        job = await self._job(queue, job_id)
        opts = {k: v for k, v in dict(job.opts or {}).items()
                if k in KNOWN_OPTIONS and k not in _NOT_DUPLICATED_OPTIONS}
        return await self.add_job(queue, job.name, job.data, opts)

    # --- queue-wide operations ----------------------------------------------------------

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
        await self._client.delete(self.key(queue, "meta"))
        self._queues.pop(queue, None)
        await q.close()
        self._note_queue(queue, False)

    async def retry_failed(self, queue: str) -> int:
        """Move every failed job back to waiting; returns how many there were."""
        q = await self.get_queue(queue)
        count = (await self.get_job_counts(queue))["failed"]
        await q.retryJobs({"state": "failed", "count": 1000})
        return count

    async def promote_delayed(self, queue: str) -> int:
        q = await self.get_queue(queue)
        count = (await self.get_job_counts(queue))["delayed"]
        await q.promoteJobs({"count": 1000})
        return count

    # --- schedules (bullmq job schedulers) ------------------------------------------------

    async def schedule_job(
        self, queue: str, name: str, data: Any = None, *, cron: str | None = None,
        every_ms: int | None = None, tz: str | None = None, scheduler_id: str | None = None,
        limit: int | None = None, opts: dict[str, Any] | None = None,
    ) -> ScheduleInfo:
        if (cron is None) == (every_ms is None):
            raise InvalidScheduleError("Give exactly one of cron=... or every=...")
        repeat: dict[str, Any] = {}
        if cron is not None:
            _validate_cron(cron)
            repeat["pattern"] = cron
        else:
            if not isinstance(every_ms, int) or isinstance(every_ms, bool) or every_ms <= 0:
                raise InvalidScheduleError(
                    f"every must be a positive number of ms, not {every_ms!r}"
                )
            repeat["every"] = every_ms
        if tz:
            _validate_tz(tz)
            repeat["tz"] = tz
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise InvalidScheduleError(f"limit must be a whole number >= 1, not {limit!r}")
            repeat["limit"] = limit
        validate_job_options(opts or {})
        _check_json(data)
        q = self._queue_handle(queue)
        sid = scheduler_id or name
        try:
            await q.upsertJobScheduler(sid, repeat, name, data if data is not None else {},
                                       self._merged(q, opts))
        except InvalidScheduleError:
            raise
        except Exception as exc:
            raise InvalidScheduleError(f"Cannot schedule {sid!r}: {exc}") from None
        self._note_queue(queue, True)
        for schedule in await self.list_schedules(queue):
            if schedule["id"] == sid:
                return schedule
        raise MailQueueError(f"Scheduler {sid!r} was not stored")  # pragma: no cover

    async def list_schedules(self, queue: str | None = None) -> list[ScheduleInfo]:
        """Schedules of one queue, or of every queue."""
        names = [queue] if queue is not None else await self.list_queues()
        result: list[ScheduleInfo] = []
        for name in names:
            q = await self.get_queue(name)
            for raw in await q.getJobSchedulers(0, -1, True):
                if raw:
                    result.append(_schedule_info(name, raw))
        return result

    async def remove_schedule(self, queue: str, scheduler_id: str) -> bool:
        q = await self.get_queue(queue)
        if not await q.isJobScheduler(scheduler_id):
            return False
        await q.removeJobScheduler(scheduler_id)
        return True

    # --- metrics ----------------------------------------------------------------------------

    async def get_metrics(self, queue: str, kind: str = "completed", points: int = 60
                          ) -> dict[str, Any]:
        """Per-minute counts written by workers with metrics on (newest first).

        bullmq for Python has no getMetrics (docs/bullmq-notes.md #4); this reads the same keys
        Node's getMetrics reads: `<prefix>:<queue>:metrics:<kind>` and its `:data` list.
        """
        if kind not in ("completed", "failed"):
            raise MailQueueError("kind must be 'completed' or 'failed'")
        await self.get_queue(queue)
        return await queue_stats.read_metrics(self._client, self.key(queue, "metrics", kind),
                                              points)

    async def get_all_queue_metrics(self) -> dict[str, dict[str, Any]]:
        """Counts and completed/failed per minute for every queue under the prefix."""
        result: dict[str, dict[str, Any]] = {}
        for name in await self.list_queues():
            counts, paused, completed, failed = await asyncio.gather(
                self.get_job_counts(name),
                self._queue_handle(name).isPaused(),
                self.get_metrics(name, "completed"),
                self.get_metrics(name, "failed"),
            )
            result[name] = {
                "counts": counts, "paused": bool(paused),
                "completed": completed, "failed": failed,
            }
        return result

    async def get_many_job_counts(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Counts per state and the paused flag of many queues, in one round trip."""
        for name in names:
            validate_queue_name(name)
        read = await self._read_counts(list(names))
        return {name: {"counts": read[name][0], "paused": read[name][1]} for name in names}

    async def get_overview(self, names: list[str], now_ms: int | None = None
                           ) -> dict[str, dict[str, Any]]:
        """What the overview shows of many queues, in ONE round trip: per queue its counts,
        the paused flag and its last hour of completed and failed jobs per minute
        (`series`, see queue_stats; `completed_per_minute` and `failed_per_minute` are its
        known minutes, newest first)."""
        for name in names:
            validate_queue_name(name)
        names = list(names)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        replies = await self._counts_pipeline(names, now)
        result: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            raw, paused, series_reply = replies[3 * i: 3 * i + 3]
            counts, is_paused = _parse_counts(raw, paused)
            series = queue_stats.parse_series(series_reply, queue_stats.HOUR, now)
            known = queue_stats.known_newest_first
            result[name] = {"counts": counts, "paused": is_paused, "series": series,
                            "completed_per_minute": known(series["completed"]),
                            "failed_per_minute": known(series["failed"])}
        return result

    async def get_charts(self, queue: str, now_ms: int | None = None
                         ) -> queue_stats.QueueCharts:
        """The queue page's charts: last hour and day of throughput, wait and run times."""
        await self.get_queue(queue)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return await queue_stats.read_queue_charts(self._client, self.prefix, queue, now)

    # --- dashboard support --------------------------------------------------------------

    async def run_schedule_now(self, queue: str, scheduler_id: str) -> Job:
        """Add one job from a scheduler's template now; the schedule itself is unchanged.

        The job gets its own id (not the scheduler's), so it never collides with the next
        scheduled run.
        """
        await self.get_queue(queue)
        for schedule in await self.list_schedules(queue):
            if schedule["id"] == scheduler_id:
                template = schedule["template"] or {}
                opts = {k: v for k, v in dict(template.get("opts") or {}).items()
                        if k not in _SCHEDULER_ONLY_OPTIONS}
                q = self._queue_handle(queue)
                return await q.add(schedule["name"], template.get("data") or {}, opts)
        raise JobNotFoundError(f"No job scheduler {scheduler_id!r} in queue {queue!r}")


# Options that belong to a scheduler's runs, not to a one-off job made from its template.
_SCHEDULER_ONLY_OPTIONS = frozenset({"repeat", "jobId", "repeatJobKey", "delay", "prevMillis",
                                     "timestamp"})


def _parse_counts(raw: list[Any], paused_flag: Any) -> tuple[dict[str, int], bool]:
    """One queue's `getCounts` reply and `meta` paused flag: counts per state (the jobs of
    a paused queue counted as paused, not waiting) and the flag."""
    paused = bool(paused_flag)
    counts: dict[str, int] = {state: int(n or 0)
                              for state, n in zip(JOB_STATES, raw, strict=True)}
    if paused:
        counts["paused"] += counts["waiting"]
        counts["waiting"] = 0
    return counts, paused


def _glob_escape(text: str) -> str:
    """`text` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _check_json(data: Any) -> None:
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidJobOptionsError(f"Job data must be JSON-serialisable: {exc}") from None


def _usable_queue_name(name: str) -> bool:
    try:
        validate_queue_name(name)
    except MailQueueError:
        return False
    return True


def _validate_cron(pattern: str) -> None:
    fields = pattern.split() if isinstance(pattern, str) else []
    if len(fields) not in (5, 6):
        raise InvalidScheduleError(
            f"Bad cron pattern {pattern!r}: expected 5 fields (min hour day month weekday) or 6"
        )
    try:
        from croniter import croniter

        # Like bullmq (and Node's cron-parser), a 6-field pattern has the seconds first.
        croniter(pattern, second_at_beginning=True)
    except Exception as exc:
        raise InvalidScheduleError(f"Bad cron pattern {pattern!r}: {exc}") from None


def _validate_tz(tz: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(f"Unknown time zone {tz!r}") from None


def _schedule_info(queue: str, raw: dict[str, Any]) -> ScheduleInfo:
    template = raw.get("template") or {}
    next_run = raw.get("next")
    return {
        "queue": queue,
        "id": str(raw.get("key")),
        "name": str(raw.get("name") or raw.get("key")),
        "cron": raw.get("pattern"),
        "every_ms": raw.get("every"),
        "tz": raw.get("tz"),
        "next_run": int(next_run) if next_run is not None and not math.isnan(float(next_run))
        else None,
        "iteration_count": raw.get("iterationCount"),
        "limit": raw.get("limit"),
        "template": template,
    }


# What a duplicate must not inherit: it would be the same job, a repeat, a flow child or
# deduplicated away.
_NOT_DUPLICATED_OPTIONS = frozenset({
    "jobId", "repeat", "parent", "timestamp", "deduplication", "failParentOnFailure",
    "ignoreDependencyOnFailure", "removeDependencyOnFailure", "continueParentOnFailure",
})
