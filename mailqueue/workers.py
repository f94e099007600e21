"""WorkerManager: starts and stops bullmq workers, routes each job to a handler by its name.

A handler is `handler(data, job)`, sync or async; it returns the job's return value. Handlers
are looked up in a `HandlerRegistry`; `register_handler` adds one to the default registry
that `start_worker(queue)` uses when given no handlers (next to the built-in e-mail ones).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, overload

import redis.asyncio as aioredis
from bullmq import Job
from bullmq.custom_errors import UnrecoverableError

from mailqueue.bullmq_fixes import (
    RateLimitAwareWorker,
    add_listener,
    call_handler,
    find_workers,
)
from mailqueue.cluster import (
    as_cluster,
    bullmq_connection,
    client_lists,
    find_workers_on_cluster,
)
from mailqueue.errors import MailQueueError, UnknownJobNameError
from mailqueue.job_options import validate_queue_name
from mailqueue.runtime import NativeWorker
from mailqueue.settings import Settings
from mailqueue.types import WorkerInfo
from mailqueue.worker_gates import read_gates

log = logging.getLogger(__name__)

Handler = Callable[[Any, Job], Awaitable[Any] | Any]

# Node's MetricsTime.ONE_WEEK: one data point per minute, a week of them.
METRICS_MAX_DATA_POINTS = 10_080
# Options the manager sets itself; a caller passing them would break the worker.
_RESERVED_OPTIONS = {"connection", "prefix", "autorun", "concurrency"}


class UnknownJobNameFailure(UnknownJobNameError, UnrecoverableError):  # type: ignore[misc]
    """Raised for a job whose name has no handler: the job fails at once, without retries."""


class HandlerRegistry(Mapping[str, Handler]):
    """Job name -> handler; the extension point for adding job types.

    >>> registry = HandlerRegistry()
    >>> @registry.register("send-invoice")
    ... async def send_invoice(data, job): ...
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for name, handler in (handlers or {}).items():
            self.add(name, handler)

    def add(self, name: str, handler: Handler) -> Handler:
        if not isinstance(name, str) or not name.strip():
            raise MailQueueError(f"A handler needs a non-empty job name, not {name!r}")
        if not callable(handler):
            raise MailQueueError(f"The handler for {name!r} is not callable: {handler!r}")
        self._handlers[name] = handler
        return handler

    @overload
    def register(self, name: str) -> Callable[[Handler], Handler]: ...
    @overload
    def register(self, name: str, handler: Handler) -> Handler: ...

    def register(
        self, name: str, handler: Handler | None = None
    ) -> Handler | Callable[[Handler], Handler]:
        """Register `handler` for job `name`; without a handler, a decorator that does so."""
        if handler is not None:
            return self.add(name, handler)
        return lambda fn: self.add(name, fn)

    def remove(self, name: str) -> None:
        self._handlers.pop(name, None)

    def resolve(self, job_name: str, queue: str = "?") -> Handler:
        """The handler for `job_name`; an unrecoverable error naming what is registered."""
        handler = self._handlers.get(job_name)
        if handler is None:
            registered = ", ".join(sorted(self._handlers)) or "none"
            raise UnknownJobNameFailure(
                f"No handler for job name {job_name!r} in queue {queue!r}; "
                f"registered names: {registered}"
            )
        return handler

    def __getitem__(self, name: str) -> Handler:
        return self._handlers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


# Handlers every `start_worker(queue)` without explicit handlers serves, besides the built-in
# e-mail ones. Add yours with `@register_handler("job-name")`.
default_handlers = HandlerRegistry()


def register_handler(name: str) -> Callable[[Handler], Handler]:
    """Decorator: serve jobs named `name` with the decorated function by default."""
    return default_handlers.register(name)


class ManagedWorker:
    """One worker and the task that runs it: a bullmq Worker with the workarounds applied
    (runtime "bullmq") or the native loop over bullmq's scripts (runtime "native")."""

    def __init__(
        self, queue: str, handlers: HandlerRegistry, concurrency: int, options: dict[str, Any],
        runtime: str = "bullmq",
    ) -> None:
        self.queue = queue
        self.handlers = handlers
        self.concurrency = concurrency
        self.runtime = runtime
        worker_class = NativeWorker if runtime == "native" else RateLimitAwareWorker
        self.worker: RateLimitAwareWorker | NativeWorker = worker_class(
            queue, self._process, {**options, "autorun": False}
        )
        self.name: str | None = self.worker.workerName
        add_listener(self.worker, "error", self._on_error)
        self._close_task: asyncio.Task[None] | None = None
        self._run_task = asyncio.ensure_future(self._run())

    async def _process(self, job: Job, token: str) -> Any:
        handler = self.handlers.resolve(job.name, self.queue)
        return await call_handler(handler, job.data, job)

    async def _run(self) -> None:
        try:
            await self.worker.run()  # probes the Redis version first (sub-second delays)
        except Exception:
            if not self.worker.closing:
                log.exception("Worker %s of queue %r stopped", self.name, self.queue)

    def _on_error(self, error: BaseException, *args: Any) -> None:
        if not self.worker.closing:
            log.error("Worker %s of queue %r: %s", self.name, self.queue, error)

    @property
    def running(self) -> bool:
        return not self._run_task.done()

    @property
    def active_jobs(self) -> int:
        return len(self.worker.jobs)

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs and wait for the active ones, at most `timeout` s (None: no limit).

        Jobs still running after the timeout are abandoned, not failed: their locks expire
        and the stalled-job check of any live worker puts them back in `wait`. Either way the
        worker's connections are closed only once none of its tasks can use them any more.
        """
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._close_task)

    async def _close(self, timeout: float | None) -> None:
        closing = asyncio.ensure_future(self.worker.close())
        done, _ = await asyncio.wait({closing}, timeout=timeout)
        if not done:
            log.warning(
                "Worker %s of queue %r: %d job(s) still active after %.1f s; abandoning them "
                "(they will be retried as stalled jobs)",
                self.name, self.queue, len(self.worker.jobs), timeout,
            )
            self.worker.abandon_jobs()
        await asyncio.gather(closing, return_exceptions=True)
        await asyncio.gather(self._run_task, return_exceptions=True)


class WorkerManager:
    """Starts, lists and stops the workers of this process; finds every worker in Redis."""

    def __init__(
        self, connection: dict[str, Any], client: aioredis.Redis, prefix: str, settings: Settings
    ) -> None:
        self._connection = connection
        self._client = client
        self.prefix = prefix
        self.settings = settings
        self._workers: dict[str, list[ManagedWorker]] = {}
        self._serial = itertools.count(1)
        self._host = socket.gethostname().replace(" ", "_") or "host"

    def start_worker(
        self, queue: str, handlers: Mapping[str, Handler] | None,
        concurrency: int | None = None, **options: Any,
    ) -> ManagedWorker:
        """Start a worker on `queue` that sends each job to the handler named like the job.

        `handlers` None: the built-in e-mail handlers plus those added with
        `register_handler`. `options` are bullmq worker options (limiter, lockDuration,
        stalledInterval, maxStalledCount, drainDelay, metrics, name...), over those the
        settings give (`worker_options_from_settings`); `limiter=None` lifts the settings'
        rate limit. `concurrency` None: WORKER_CONCURRENCY. WORKER_RUNTIME picks the loop
        (native or bullmq); both honour the same options. Needs a running loop.
        """
        if concurrency is None:
            concurrency = self.settings.worker_concurrency
        options = {**worker_options_from_settings(self.settings, queue), **options}
        if options.get("limiter", False) is None:
            del options["limiter"]
        validate_queue_name(queue)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise MailQueueError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        reserved = _RESERVED_OPTIONS & set(options)
        if reserved:
            raise MailQueueError(
                f"Worker option(s) {', '.join(sorted(reserved))} are set by the manager"
            )
        _check_limiter(options.get("limiter"))
        if handlers is None:
            registry = HandlerRegistry(
                {**self.create_email_handlers(self.settings), **default_handlers}
            )
        else:
            registry = HandlerRegistry(handlers)
        if not registry:
            raise MailQueueError(f"No handlers given for queue {queue!r}")
        asyncio.get_running_loop()  # a clear RuntimeError now rather than a stray task later
        worker_options: dict[str, Any] = {
            "metrics": {"maxDataPoints": METRICS_MAX_DATA_POINTS},
            # A unique name per worker: its two connections are told apart from others'.
            "name": f"{self._host}-{os.getpid()}-{next(self._serial)}",
            **options,
            "connection": bullmq_connection(self._connection),
            "prefix": self.prefix,
            "concurrency": concurrency,
        }
        managed = ManagedWorker(queue, registry, concurrency, worker_options,
                                runtime=self.settings.worker_runtime)
        self._workers.setdefault(queue, []).append(managed)
        return managed

    def workers(self, queue: str | None = None) -> list[ManagedWorker]:
        """The workers started by this manager (of one queue, or all)."""
        if queue is not None:
            return list(self._workers.get(queue, []))
        return [w for group in self._workers.values() for w in group]

    async def stop_worker(self, queue: str, timeout: float | None = None) -> None:
        """Close this process's workers of `queue`, waiting for their active jobs."""
        workers = self._workers.pop(queue, [])
        await self._close_all(workers, timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Close every worker, waiting for active jobs up to `timeout` s (default: settings)."""
        workers = self.workers()
        self._workers = {}
        await self._close_all(workers, timeout)

    async def _close_all(self, workers: list[ManagedWorker], timeout: float | None) -> None:
        limit = self.settings.worker_close_timeout_s if timeout is None else timeout
        await asyncio.gather(*(w.close(limit) for w in workers))

    async def list_workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """Every live BullMQ worker (Python or Node, any process) of `queue` or of all queues.

        Each: {queue, name, addr, age_s, idle_s, language, client_name, connections}.
        """
        node_clients = await client_lists(self._client)  # every master on a cluster
        if as_cluster(self._client) is not None:
            return find_workers_on_cluster(node_clients, self.prefix, queue,
                                           known_queues=set(self._workers))
        return find_workers(node_clients[0], self.prefix, queue,
                            known_queues=set(self._workers))

    async def gate_states(self, workers: Iterable[WorkerInfo]) -> dict[str, dict[str, Any]]:
        """Worker name -> what holds it (its SMTP server is down), for the workers of
        `list_workers` that published one (mailqueue.worker_gates)."""
        return await read_gates(self._client, self.prefix, (w.get("name") for w in workers))

    @staticmethod
    def create_email_handlers(settings: Settings | None = None) -> dict[str, Handler]:
        """The built-in e-mail handlers (send-welcome, send-newsletter, ...) and the steps of
        the e-mail flows (validate-email, newsletter-batch, retry-send, ...), one SMTP pool."""
        try:
            from mailqueue.mail.flow_handlers import create_flow_handlers
        except ImportError as exc:
            raise MailQueueError(
                f"The built-in e-mail handlers cannot be loaded ({exc}); "
                "pass your own handlers to start_worker"
            ) from None
        return create_flow_handlers(settings)


def worker_options_from_settings(settings: Settings, queue: str) -> dict[str, Any]:
    """The bullmq worker options the settings give a worker of `queue`.

    Lock duration and stalled-job interval for every queue; for the e-mail queue
    (DEFAULT_QUEUE), MAIL_RATE_LIMIT as `{"max": N, "duration": 1000}`. BullMQ keeps the
    limiter's count in Redis, so the limit holds across every worker process together.
    Every worker this project starts gets these: the CLI's and the Python API's alike.
    """
    options: dict[str, Any] = {
        "lockDuration": settings.worker_lock_duration_ms,
        "stalledInterval": settings.worker_stalled_interval_ms,
    }
    if queue == settings.default_queue and settings.mail_rate_limit > 0:
        options["limiter"] = {"max": settings.mail_rate_limit, "duration": 1000}
    return options


def _check_limiter(limiter: Any) -> None:
    if limiter is None:
        return
    ok = isinstance(limiter, dict) and all(
        isinstance(limiter.get(key), int) and not isinstance(limiter.get(key), bool)
        and limiter[key] > 0 for key in ("max", "duration")
    )
    if not ok:
        raise MailQueueError(
            f"limiter must be {{'max': jobs > 0, 'duration': ms > 0}}, not {limiter!r}"
        )
