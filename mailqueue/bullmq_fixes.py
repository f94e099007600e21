"""Every workaround for a bug of bullmq 3.4.4 lives here, named after the bug it covers.

See BULLMQ-NOTES ("Broken or missing") for the measurements behind each one;
each has a regression test under tests/ that fails without it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, cast

import redis.asyncio as aioredis
from bullmq import Job, Worker
from bullmq.lock_manager import LockManager
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from mailqueue.errors import RedisUnavailableError
from mailqueue.redact import redact_url
from mailqueue.worker_gates import WorkerGate, WorkerHolds

log = logging.getLogger(__name__)

# --- Idle stalls (BULLMQ-NOTES item 1) -------------------------------------------------------
# redis-py gives connections a 5 s socket timeout by default, while a worker blocks for 5 s
# and QueueEvents for 10 s: the blocking calls time out and back off, making an idle worker
# pick up jobs 10-15 s late. Every bullmq connection we build has no socket timeout.


def connection_options(redis_url: str) -> dict[str, Any]:
    """bullmq connection options for a URL, with the idle-stall fix applied.

    The URL is read by redis-py's own parser, so everything `redis.from_url` honours works
    here too: `rediss://` with `?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem` (and the
    other `ssl_*` options), a database as `/2` or `?db=2`, `user:password@`, `unix://`
    sockets. The result is keyword arguments of `redis.asyncio.Redis(...)`: bullmq splats a
    dict into it, and a URL string would give us no way to pass `socket_timeout=None`.
    An option redis-py does not know is a one-line error naming it (redis-py would only
    fail at the first connection, with a TypeError).
    """
    try:
        parsed = parse_url(redis_url)
    except ValueError as exc:
        raise RedisUnavailableError(f"REDIS_URL {redact_url(redis_url)!r}: {exc}") from None
    connection_class = parsed.pop("connection_class", None)
    options: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        **parsed,
        # The fix; after the URL's own options, which must not bring the timeout back.
        "socket_timeout": None,
    }
    if connection_class is not None and issubclass(connection_class, UnixDomainSocketConnection):
        # redis.asyncio.Redis names the socket `unix_socket_path`; a TCP host does not apply.
        options["unix_socket_path"] = options.pop("path", "")
        options.pop("socket_keepalive", None)
    elif connection_class is not None and issubclass(connection_class, SSLConnection):
        options["ssl"] = True
    known = _redis_client_options()
    for name in sorted(set(options) - known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else "see redis-py's Redis() arguments"
        raise RedisUnavailableError(
            f"REDIS_URL {redact_url(redis_url)!r}: unknown option {name!r} ({hint})"
        )
    return options


@functools.cache
def _redis_client_options() -> frozenset[str]:
    params = inspect.signature(aioredis.Redis.__init__).parameters
    return frozenset(name for name in params if name != "self")


def pool_options(connection: Mapping[str, Any]) -> dict[str, Any]:
    """`connection_options` as a connection pool takes them (what `Redis(...)` does inside).

    `redis.asyncio.Redis(**options)` turns `ssl=True` and `unix_socket_path` into a
    connection class; a pool built by hand must be given that class itself.
    """
    options = dict(connection)
    path = options.pop("unix_socket_path", None)
    ssl = options.pop("ssl", False)
    if path:
        for tcp_only in ("host", "port", "socket_keepalive", "socket_keepalive_options"):
            options.pop(tcp_only, None)
        options = {k: v for k, v in options.items() if not k.startswith("ssl_")}
        options.update(connection_class=UnixDomainSocketConnection, path=path)
    elif ssl:
        options["connection_class"] = SSLConnection
    else:
        options = {k: v for k, v in options.items() if not k.startswith("ssl_")}
    return options


# --- Sub-second delays (BULLMQ-NOTES item 2) -------------------------------------------------
# Worker.waitForJob rounds its block timeout up to whole seconds unless the connection's
# `canDoubleTimeout` capability is set, and only `RedisConnection.getRedisVersion()` sets it,
# which the Worker never calls: a 200 ms delayed job ran after ~1.1 s. Probing the version on
# both worker connections before the worker runs gives ~250 ms.


async def enable_subsecond_delays(worker: Worker) -> None:
    """Run bullmq's Redis version probe on the worker's connections (sets the capabilities)."""
    for connection in (worker.redisConnection, worker.blockingRedisConnection):
        if connection is not None:
            await connection.getRedisVersion()


# --- The rate limiter (BULLMQ-NOTES item 3) --------------------------------------------------
# The moveToActive script answers "rate limited for N more ms"; bullmq stores that *delay* in
# `limitUntil` as if it were a timestamp and never reads it. The worker then blocks on the
# queue's marker for `drainDelay` (5 s) before it asks again: `{max: 5, duration: 1000}` ran 5
# jobs per 5 s. Node BullMQ turns the delay into a deadline and, while it lies ahead, sleeps
# until it and then asks for a job directly (no marker wait). This Worker does the same.
# The limit itself lives in Redis (`<prefix>:<queue>:limiter`), so it is shared by every
# worker process of the queue.


def _now_ms() -> int:
    return int(time.time() * 1000)


class RateLimitAwareWorker(Worker):  # type: ignore[misc]  # bullmq is untyped
    """A bullmq Worker that honours `limiter` (and `Queue.setGlobalRateLimit`), probes the
    Redis version before it runs (sub-second delays) and closes cleanly (see below)."""

    def __init__(self, name: str, processor: Any, opts: dict[str, Any] | None = None) -> None:
        super().__init__(name, processor, cast(Any, opts or {}))
        # Set by close/pause to cut a rate-limit sleep short.
        self._limit_wakeup = asyncio.Event()
        # Clean close: see close().
        self.lockManager = _LockManagerKeptWhileDraining(
            self,
            lock_renew_time=self.opts["lockRenewTime"],
            lock_duration=self.opts["lockDuration"],
            worker_id=self.id,
            worker_name=self.workerName,
        )
        self._run_finished: asyncio.Future[None] | None = None
        self._teardown: asyncio.Future[None] | None = None
        self._draining = False
        self._holds = WorkerHolds(self, on_release=self._release_hold)
        self._holding: asyncio.Future[None] | None = None

    def hold(self, gate: WorkerGate) -> None:
        """Take no job while `gate` blocks (a handler's transport is down): bullmq's pause,
        without waiting for the active jobs (the caller is one of them), then resume."""
        if self._holds.hold(gate):
            log.warning("Worker %s: %s; taking no jobs until it is back", self.workerName,
                        gate.describe().get("error") or "held")
            self._holding = asyncio.ensure_future(self.pause(do_not_wait_active=True))

    def _release_hold(self) -> None:
        if not self.closing:
            self.resume()

    async def moveToActive(self, token: str) -> Job | None:
        result = await self.backend.moveToActive(token, self.opts)
        job_data, job_id, limit_delay, delay_until = result or (None, None, 0, 0)
        delay_ms = int(limit_delay or 0)
        limit_until = _now_ms() + delay_ms if delay_ms > 0 else 0
        job: Job | None = await self.nextJobFromJobData(
            job_data, job_id, limit_until, delay_until or 0, token
        )
        return job

    async def getNextJob(self, token: str) -> Job | None:
        delay_ms = self.limitUntil - _now_ms()
        if delay_ms <= 0 or self.closing:
            job: Job | None = await super().getNextJob(token)
            return job
        try:
            await asyncio.wait_for(self._limit_wakeup.wait(), delay_ms / 1000)
        except TimeoutError:
            pass
        if self.closing or self.paused:
            return None
        # The limit has expired: ask directly. The jobs are in `wait` already, and the marker
        # that announced them was consumed, so a marker wait would sleep for drainDelay.
        job = await self.moveToActive(token)
        if job is not None:
            self.emit("active", job, "waiting")
        return job

    async def pause(self, do_not_wait_active: bool = False) -> None:
        self._limit_wakeup.set()
        await super().pause(do_not_wait_active)

    def resume(self) -> None:
        self._limit_wakeup.clear()
        super().resume()

    # --- Clean close (not in BULLMQ-NOTES yet) -------------------------------------------------
    # bullmq's close() waits for the tasks in `processing` *when close is called*, then closes
    # the connections. But a getNextJob task that is inside moveToActive at that moment still
    # gets a job, and the run loop turns it into a new processJob task nobody waits for: its
    # moveToCompleted ran on the closed client, which reconnected (a new socket, never closed:
    # ResourceWarning "unclosed Connection ... client_name=<prefix>:<queue>:w:<name>"), and
    # redis-py's pool.release of that connection raised KeyError, so the job was *failed*
    # with a KeyError (moveToFailed reconnecting once more). The run loop also ends as soon as
    # one job finishes while closing: it closed the lock manager while other jobs still ran,
    # and the jobs its pending getNextJob tasks fetched afterwards were never run (left
    # active until their locks expired). Here close() runs those jobs too, waits until the run
    # loop has ended and every task is done (the lock manager renewing locks meanwhile), and
    # only then closes the lock manager and both connections. abandon_jobs() turns a
    # graceful close into a forced one.

    async def run(self) -> None:
        if self.closing:  # closed before it ran: touch nothing
            return
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_finished = finished
        try:
            await enable_subsecond_delays(self)
            if not self.closing:
                await super().run()
        finally:
            finished.set_result(None)

    async def processJob(self, job: Job, token: str) -> None:
        if self.forceClosing:
            # Fetched by a moveToActive that was in flight when the jobs were abandoned: do not
            # start it. Its lock expires and a stalled-job check puts it back in `wait`.
            return
        await super().processJob(job, token)

    def abandon_jobs(self) -> None:
        """Force a close in progress: cancel the running jobs, neither completing nor failing
        them (their locks expire and they come back as stalled jobs)."""
        self.forceClosing = True
        self.lockManager.cancel_all_jobs("worker force-closed")
        self.cancelProcessing()

    async def close(self, force: bool = False) -> None:
        """Stop taking jobs, wait for every task the worker started, then close the lock
        manager and both Redis connections. `force`: abandon the running jobs first."""
        self._limit_wakeup.set()
        self.closing = True
        self.paused = False
        self.resume_event.set()
        if self.waiting is not None and not self.waiting.done():
            self.waiting.cancel()
        if force:
            self.abandon_jobs()
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._close_when_idle(force))
        cancelled = False
        while True:  # like bullmq: a cancelled close still finishes its teardown
            try:
                await asyncio.shield(self._teardown)
                break
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError()

    async def _close_when_idle(self, force: bool) -> None:
        self._draining = True
        try:
            await self._wait_for_tasks()
        finally:
            self._draining = False
        await self._holds.close()  # deletes the published state while Redis is still ours
        await self.lockManager.close()
        try:
            await self.backend.close(force=force)
        except Exception as err:
            self.emit("error", err)
        await self._disconnect()
        self.closed = True
        self.emit("closed")

    async def _wait_for_tasks(self) -> None:
        """Until the run loop has ended and every task in `processing` is done."""
        while True:
            if self.forceClosing:
                self.cancelProcessing()
            run_over = self._run_finished is None or self._run_finished.done()
            if run_over:
                self._start_orphaned_jobs()
            waiters: set[asyncio.Future[Any]] = {t for t in self.processing if not t.done()}
            if not run_over and self._run_finished is not None:
                waiters.add(self._run_finished)
            if not waiters:
                break
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        # run() stops the stalled-jobs timer without waiting for a check in flight.
        timer = getattr(self, "stalledCheckTimer", None)
        timer_task = getattr(timer, "_task", None)
        if isinstance(timer_task, asyncio.Future):
            await asyncio.gather(timer_task, return_exceptions=True)

    def _start_orphaned_jobs(self) -> None:
        """Process the jobs of the getNextJob tasks the run loop left behind when it ended.

        A getNextJob task inside moveToActive when the loop ended still gets a job, which is
        then active in Redis: nobody would run it, and it would wait for its lock to expire
        and come back as a stalled job. Run it, as the loop would have.
        """
        for task in [t for t in self.processing if t.done()]:
            self.processing.discard(task)
            if task.cancelled() or task.exception() is not None:
                continue
            job = task.result()
            if isinstance(job, Job):
                self.processing.add(asyncio.ensure_future(self.processJob(job, job.token)))

    async def _disconnect(self) -> None:
        """Disconnect every socket of both clients (whatever created them)."""
        for connection in (self.redisConnection, self.blockingRedisConnection):
            client = getattr(connection, "conn", None)
            if client is None:
                continue
            try:
                await client.connection_pool.disconnect(inuse_connections=True)
            except Exception as err:
                log.debug("Worker %s: disconnecting: %s", self.workerName, err)


class _LockManagerKeptWhileDraining(LockManager):  # type: ignore[misc]  # untyped
    """bullmq's run() closes the lock manager when its loop ends; while a close drains the
    jobs that are still running, their locks must keep being renewed: the close closes it."""

    async def close(self) -> None:
        if getattr(self.worker, "_draining", False):
            return
        await super().close()


# --- Sync processors (BULLMQ-NOTES item 9) ---------------------------------------------------
# bullmq awaits whatever the processor returns, so a plain `def` fails every job with
# "object int can't be used in 'await' expression". Handlers may be sync or async here: a
# sync one runs in a thread so that it cannot block the event loop (and the lock renewals).


async def call_handler(handler: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async handler and return its result, never blocking the loop."""
    if inspect.iscoroutinefunction(handler):
        return await handler(*args)
    result = await asyncio.to_thread(handler, *args)
    if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
        result = await result
    return result


# --- Async event listeners (BULLMQ-NOTES item 6) ---------------------------------------------
# bullmq's EventEmitter calls listeners synchronously and drops what they return, so an
# `async def` listener never runs ("coroutine ... was never awaited").

_listener_tasks: set[asyncio.Task[Any]] = set()


def add_listener(emitter: Any, event: str, callback: Callable[..., Any]) -> Callable[..., None]:
    """`emitter.on(event, callback)` that also accepts async callbacks; returns the listener.

    An async callback is run as a task on the running loop (a reference is kept until it
    ends; its exceptions are logged). Pass the returned listener to `emitter.off` to remove it.
    """

    def listener(*args: Any, **kwargs: Any) -> None:
        result = callback(*args, **kwargs)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            _listener_tasks.add(task)
            task.add_done_callback(_listener_done)

    emitter.on(event, listener)
    return listener


def _listener_done(task: asyncio.Task[Any]) -> None:
    _listener_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("Event listener failed", exc_info=task.exception())


# --- Worker discovery across Node and Python (BULLMQ-NOTES item 7) --------------------------
# Python bullmq names a worker's connections `<prefix>:<queue>`, Node BullMQ
# `<prefix>:<base64(queue)>`, both optionally followed by `:w:<worker name>`; each side's
# getWorkers sees only its own. A worker holds two connections (commands + blocking wait)
# under one name, so connections are paired into workers, never counted one by one.
# Node's QueueEvents connection (`...:qe`) is not a worker.


def parse_client_list(text: str) -> list[dict[str, str]]:
    """Parse the raw reply of CLIENT LIST (one `key=value ...` line per connection)."""
    clients = []
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for pair in line.split(" "):
            key, sep, value = pair.partition("=")
            if sep:
                fields[key] = value
        if fields:
            clients.append(fields)
    return clients


def _node_queue_name(segment: str) -> str | None:
    """The queue name a Node client-name segment encodes, or None if it is not base64 text."""
    if len(segment) % 4 or not segment:
        return None
    try:
        decoded = base64.b64decode(segment, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not decoded or ":" in decoded or not decoded.isprintable():
        return None
    if base64.b64encode(decoded.encode("utf-8")).decode("ascii") != segment:
        return None
    return decoded


def find_workers(
    clients: Iterable[Mapping[str, Any]], prefix: str, queue: str | None = None,
    known_queues: Collection[str] = (),
) -> list[dict[str, Any]]:
    """BullMQ workers (Python and Node) among CLIENT LIST entries, one dict per worker.

    `queue` keeps the workers of one queue; `known_queues` settles a name that reads both as a
    Python queue name and as base64 (a known queue name wins, as Python).
    Each dict: queue, name, addr, age_s, idle_s, language, client_name, connections.
    """
    head = f"{prefix}:"
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for client in clients:
        raw = str(client.get("name") or "")
        if not raw.startswith(head):
            continue
        segment, _, suffix = raw[len(head):].partition(":")
        if suffix and not suffix.startswith("w:"):
            continue  # `qe` (Node QueueEvents) and anything else that is not a worker
        node_queue = None if segment in known_queues else _node_queue_name(segment)
        if node_queue is not None:
            queue_name, language = node_queue, "node"
        else:
            queue_name, language = segment, "python"
        if not queue_name or (queue is not None and queue_name != queue):
            continue
        groups.setdefault((queue_name, language, raw), []).append(client)

    workers = []
    for (queue_name, language, raw), connections in groups.items():
        worker_name = raw[len(head):].partition(":")[2][2:]
        # Connections sharing a name are ordered as Redis created them (client id).
        ordered = sorted(connections, key=lambda c: int(c.get("id") or 0))
        if worker_name:
            # A named worker (every worker this project starts: host-pid-n) is one worker
            # however many connections its pool opened: commands in flight at once (a job's
            # log line while it runs) add connections under the same name.
            groups_of = [ordered]
        else:
            # Unnamed workers hold two connections each (a main and a blocking one).
            groups_of = [ordered[start:start + 2] for start in range(0, len(ordered), 2)]
        for group in groups_of:
            first = group[0]
            workers.append({
                "queue": queue_name,
                "name": worker_name or None,
                "addr": str(first.get("addr") or ""),
                "age_s": max(int(c.get("age") or 0) for c in group),
                "idle_s": min(int(c.get("idle") or 0) for c in group),
                "language": language,
                "client_name": raw,
                "connections": len(group),
            })
    workers.sort(key=lambda w: (w["queue"], w["language"], w["client_name"], w["addr"]))
    return workers


# --- Lua text read again for every queue handle ------------------------------------------------
# Every bullmq Queue builds its own RedisConnection, which reads all ~60 Lua files from disk
# and keeps its own copy of their text (~270 KB a queue): the dashboard of a Redis with 1,000
# queues held ~300 MB of the same scripts. Each file is now read once per process and the
# one string shared by every handle (the scripts are part of the installed package and never
# change while it runs).

def share_lua_script_text() -> None:
    from bullmq import redis_connection

    if not isinstance(redis_connection.loadScript, functools._lru_cache_wrapper):
        redis_connection.loadScript = functools.cache(redis_connection.loadScript)


share_lua_script_text()
