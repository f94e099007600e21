"""MailManager: the one facade over queues, workers, events and flows (the seed's MailManager)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job

from mailqueue.bullmq_fixes import connection_options
from mailqueue.campaign_workers import CampaignWorkers
from mailqueue.campaigns import Campaigns
from mailqueue.cluster import (
    check_cluster_prefix,
    make_client,
    with_cluster_flag,
)
from mailqueue.desk import MailDesk
from mailqueue.errors import MailQueueError, RedisUnavailableError
from mailqueue.events import EventManager, Subscription
from mailqueue.events.reader_stats import EventStats
from mailqueue.flows import AddedFlow, FlowManager, FlowMetrics, FlowNode
from mailqueue.mail.message import parse_sender
from mailqueue.mail.outbox import Outbox
from mailqueue.mail.sink import MailSink, registered_sink_url
from mailqueue.mail.templates import BUILTIN_TEMPLATES
from mailqueue.monitoring import HealthReport, Monitoring, QueueStats, RedisInfo
from mailqueue.queues import QueueManager
from mailqueue.queues.counts import QueueMetrics
from mailqueue.redact import redact_url
from mailqueue.redis_server import RedisTarget, wait_for_redis
from mailqueue.settings import Settings
from mailqueue.types import ScheduleInfo
from mailqueue.workers import Handler, ManagedWorker, WorkerManager

log = logging.getLogger(__name__)


class MailManager:
    """Queues, workers, events and flows behind one small API.

    >>> async with MailManager() as mail:
    ...     await mail.add_job("emails", "send-welcome", {"to": "ada@example.com"})
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        base = settings or Settings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self.redis: RedisTarget | None = None
        self._client: aioredis.Redis | None = None
        self._queues: QueueManager | None = None
        self._workers: WorkerManager | None = None
        self._events: EventManager | None = None
        self._flows: FlowManager | None = None
        self._desk: MailDesk | None = None
        self._campaigns: Campaigns | None = None
        self._campaign_workers: CampaignWorkers | None = None
        self._sink: MailSink | None = None
        self._monitoring: Monitoring | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> MailManager:
        """Find or start Redis, connect, and build the managers. Idempotent."""
        if self._client is not None:
            return self
        s = self.settings
        if s.redis_cluster:
            check_cluster_prefix(s.queue_prefix)
            if not s.redis_url:
                raise MailQueueError(
                    "REDIS_CLUSTER=true needs REDIS_URL: the address of any node of the cluster"
                )
        self.redis = await wait_for_redis(s.redis_url, s.data_dir, s.redis_connect_timeout_s)
        # Two kinds of connection. Blocking reads (a Worker's BZPOPMIN/BRPOPLPUSH, the event
        # reader's XREAD BLOCK) wait on purpose and must never time out (docs/bullmq-notes.md
        # #1): `connection`, no socket timeout. Every other command (pages, /health, adding
        # jobs) is answered in microseconds by a Redis that works: `commands` gives up after
        # REDIS_COMMAND_TIMEOUT_S, so a stalled Redis is reported (a 503 with a banner)
        # instead of hanging every page until it wakes.
        connection = with_cluster_flag(connection_options(self.redis.url), s.redis_cluster)
        commands = {**connection, "socket_timeout": s.redis_command_timeout_s or None}
        try:
            client = make_client(commands)
        except MailQueueError:
            self.redis.close()
            raise
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            self.redis.close()
            what = "Redis Cluster node" if s.redis_cluster else "Redis"
            raise RedisUnavailableError(
                f"{what} at {redact_url(self.redis.url)} does not answer: {exc}"
            ) from None
        self._client = client
        self._queues = QueueManager(commands, client, s.queue_prefix, s.default_job_options())
        self._events = EventManager(connection, client, s.queue_prefix, s)
        self._workers = WorkerManager(connection, client, s.queue_prefix, s)
        self._flows = FlowManager(commands, client, s.queue_prefix, self._queues)
        self._campaigns = Campaigns(client, s.queue_prefix, self._queues)
        self._monitoring = Monitoring(client, s, self.redis, self._queues, self._workers)
        self._desk = MailDesk(client, s.queue_prefix, self.record_audit,
                              sender_domain=parse_sender(s.mail_from).email.rpartition("@")[2])
        return self

    async def close(self) -> None:
        """Close workers (waiting for active jobs), event readers and queues; stop Redis if ours."""
        if self._client is None:
            return
        try:
            await self.stop_serving_campaigns()
            if self._workers is not None:
                await self._workers.close()
            if self._sink is not None:
                await self._sink.stop()
                self._sink = None
            if self._events is not None:
                await self._events.close()
            if self._flows is not None:
                await self._flows.close()
            if self._queues is not None:
                await self._queues.close()
            await self._client.aclose()
        finally:
            self._client = None
            if self.redis is not None:
                await asyncio.to_thread(self.redis.close)

    async def __aenter__(self) -> MailManager:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the managers -------------------------------------------------------------------

    def _started(self) -> None:
        if self._client is None:
            raise MailQueueError("MailManager is not started: call `await mail.start()` first")

    @property
    def client(self) -> aioredis.Redis:
        self._started()
        assert self._client is not None
        return self._client

    @property
    def queues(self) -> QueueManager:
        self._started()
        assert self._queues is not None
        return self._queues

    @property
    def workers(self) -> WorkerManager:
        self._started()
        assert self._workers is not None
        return self._workers

    @property
    def events(self) -> EventManager:
        self._started()
        assert self._events is not None
        return self._events

    @property
    def monitoring(self) -> Monitoring:
        """Health, Redis and queue statistics (mailqueue.monitoring)."""
        self._started()
        assert self._monitoring is not None
        return self._monitoring

    @property
    def desk(self) -> MailDesk:
        """The delivery log and the suppression list (mailqueue.desk)."""
        self._started()
        assert self._desk is not None
        return self._desk

    @property
    def campaigns(self) -> Campaigns:
        """Newsletters to many recipients, with progress (mailqueue.campaigns)."""
        self._started()
        assert self._campaigns is not None
        return self._campaigns

    def serve_campaigns(self, handlers: Any, concurrency: int | None = None
                        ) -> CampaignWorkers:
        """Run workers for the active campaigns' queues with `handlers`, as they come.
        Closed by `close()` (or `stop_serving_campaigns()`), before the workers."""
        if self._campaign_workers is None:
            self._campaign_workers = CampaignWorkers(
                self.campaigns, self.workers, handlers, concurrency).start()
        return self._campaign_workers

    async def stop_serving_campaigns(self) -> None:
        serving, self._campaign_workers = self._campaign_workers, None
        if serving is not None:
            await serving.close()

    @property
    def flows(self) -> FlowManager:
        self._started()
        assert self._flows is not None
        return self._flows

    # --- queues and jobs ---------------------------------------------------------------------

    async def create_queue(self, name: str, **default_job_options: Any) -> None:
        """Create the queue `name` (idempotent), with optional default job options."""
        await self.queues.create_queue(name, **default_job_options)

    async def add_job(
        self, queue: str, name: str, data: Any = None, **opts: Any
    ) -> Job:
        """Add one job; options (attempts, delay, priority, jobId...) over the defaults."""
        return await self.queues.add_job(queue, name, data, opts)

    async def add_jobs(self, queue: str, jobs: list[dict[str, Any]]) -> list[Job]:
        """Add many jobs ({name, data, opts}) in one round trip."""
        return await self.queues.add_jobs(queue, jobs)

    async def schedule_job(
        self, queue: str, name: str, data: Any = None, *, cron: str | None = None,
        every: int | None = None, tz: str | None = None, scheduler_id: str | None = None,
        limit: int | None = None, **opts: Any,
    ) -> ScheduleInfo:
        """Run `name` on a cron pattern or every `every` ms (a BullMQ job scheduler)."""
        return await self.queues.schedule_job(
            queue, name, data, cron=cron, every_ms=every, tz=tz, scheduler_id=scheduler_id,
            limit=limit, opts=opts,
        )

    async def list_schedules(self, queue: str | None = None) -> list[ScheduleInfo]:
        """Every job scheduler of one queue, or of all queues."""
        return await self.queues.list_schedules(queue)

    async def remove_schedule(self, queue: str, scheduler_id: str) -> bool:
        """Remove a job scheduler; False when there was none."""
        return await self.queues.remove_schedule(queue, scheduler_id)

    async def send(
        self, template: str, to: str | list[str], *, queue: str | None = None,
        job_options: dict[str, Any] | None = None, **variables: Any,
    ) -> Job:
        """Enqueue one e-mail on the default queue: `await mail.send("welcome", to=..., name=...)`.

        A built-in template goes to its own handler (`send-welcome`...); any other template
        name (from MAIL_TEMPLATE_DIR) goes to the generic `send-email`.
        """
        data: dict[str, Any] = {"to": to, **variables}
        if template in BUILTIN_TEMPLATES:
            name = f"send-{template}"
        else:
            name = "send-email"
            data["template"] = template
        return await self.queues.add_job(
            queue or self.settings.default_queue, name, data, job_options or {}
        )

    async def start_dev_sink(self, host: str = "127.0.0.1", port: int = 0) -> MailSink:
        """Receive this prefix's e-mail in a local SMTP server (development, no SMTP_URL).

        Workers of any process on this Redis find the sink; the outbox keeps what it got.
        """
        if self._sink is None:
            self._sink = await MailSink(self.client, self.settings.queue_prefix, host, port
                                        ).start()
        return self._sink

    @property
    def outbox(self) -> Outbox:
        """The messages the development sink received (the newest first)."""
        return Outbox(self.client, self.settings.queue_prefix)

    # --- workers -----------------------------------------------------------------------------

    def start_worker(
        self, queue: str, handlers: Mapping[str, Handler] | None = None,
        concurrency: int | None = None, **options: Any,
    ) -> ManagedWorker:
        """Process `queue`: each job goes to the handler registered under its name.

        The settings' worker options apply (WORKER_LOCK_DURATION_MS,
        WORKER_STALLED_INTERVAL_MS, and MAIL_RATE_LIMIT on the e-mail queue); `options`
        given here win over them, `limiter=None` lifts the rate limit.
        """
        return self.workers.start_worker(queue, handlers, concurrency=concurrency, **options)

    async def stop_worker(self, queue: str, timeout: float | None = None) -> None:
        """Close the workers of `queue`, waiting for their active jobs up to `timeout` s."""
        await self.workers.stop_worker(queue, timeout)

    # --- flows -------------------------------------------------------------------------------

    async def add_flow(self, definition: Mapping[str, Any]) -> AddedFlow:
        """Add a flow (name, queueName, data, children...); returns its id and tree."""
        return await self.flows.add_flow(definition)

    async def get_flow(self, queue: str, job_id: str) -> FlowNode:
        """The whole tree under a job, each node with its state."""
        return await self.flows.get_flow(queue, job_id)

    async def get_flow_metrics(self) -> FlowMetrics:
        """Flows by state and their durations."""
        return await self.flows.get_flow_metrics()

    # --- events, audit, alerts ---------------------------------------------------------------

    def on_event(
        self, queue: str | None, event_type: str | None, callback: Callable[..., Any]
    ) -> Callable[[], None]:
        """Call `callback(event)` for each event of `queue` (None: all) and type (None: all).

        Callbacks may be sync or async. Returns a function that removes the listener.
        """
        return self.events.on_event(queue, event_type, callback)

    def subscribe(
        self, queues: list[str] | None = None, last_id: str | None = None
    ) -> Subscription:
        """Events as an async iterator (also `async with`), resuming after `last_id`.

        `last_id` is an event's `cursor` (or a plain stream id for one queue): nothing is
        missed and nothing comes twice across several queues.
        """
        return self.events.subscribe(queues, last_id)

    async def get_event_stats(self) -> EventStats:
        return await self.events.get_event_stats()

    async def setup_audit_listeners(self) -> None:
        """Take part in writing job lifecycle events into the capped audit log.

        Every process that calls this competes for one lease per prefix; the holder alone
        reads the events and writes the entries (each exactly once) and the failure alerts,
        and another takes over within the lease's TTL if it goes (mailqueue/events/
        audit_writer.py). The others read no events for it.
        """
        await self.events.setup_audit_listeners()

    async def get_audit_log(self, n: int = 100) -> list[dict[str, Any]]:
        """The newest `n` audit entries (operator actions and, once set up, job lifecycle)."""
        return await self.events.get_audit_log(n)

    async def record_audit(
        self, actor: str, action: str, target: str, result: str, detail: str = ""
    ) -> str:
        """Write one entry in the audit log (who did what, on what, with what result)."""
        return await self.events.record_audit(actor, action, target, result, detail)

    def on_alert(self, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call `callback(alert)` when a queue or job name fails ALERT_FAILURE_THRESHOLD times
        within ALERT_WINDOW_S seconds. Returns a function that removes the callback."""
        return self.events.on_alert(callback)

    async def get_alerts(self, n: int = 50) -> list[dict[str, Any]]:
        """The newest `n` failure alerts."""
        return await self.events.get_alerts(n)

    # --- monitoring ----------------------------------------------------------------------------

    async def get_queue_stats(self, queue: str) -> QueueStats:
        """Counts per state, paused flag, workers and throughput of one queue."""
        return await self.monitoring.get_queue_stats(queue)

    async def get_all_queue_metrics(self) -> dict[str, QueueMetrics]:
        return await self.queues.get_all_queue_metrics()

    async def health_check(self) -> HealthReport:
        """Redis ping latency and version, and per queue: counts and workers."""
        return await self.monitoring.health_check()

    async def redis_info(self) -> RedisInfo:
        """What an operator wants to know about the Redis: version, memory, clients, load."""
        return await self.monitoring.redis_info()

    # --- dashboard support -------------------------------------------------------------------

    async def run_schedule_now(self, queue: str, scheduler_id: str) -> Job:
        """Add one job from the scheduler's template at once (the schedule is unchanged)."""
        return await self.queues.run_schedule_now(queue, scheduler_id)

    async def dev_sink_url(self) -> str | None:
        """Where this prefix's development SMTP sink listens, when one is running."""
        return await registered_sink_url(self.client, self.settings.queue_prefix)
