"""What /health, `mailqueue health` and the workers page report: Redis (latency, version,
memory), each queue's counts and workers, whether workers can send, the SMTP server."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NotRequired, TypedDict

import redis.asyncio as aioredis

from mailqueue.cluster import node_infos, redis_error_reason
from mailqueue.errors import RedisFullError
from mailqueue.mail.sink import registered_sink_url
from mailqueue.mail.transport import probe_smtp
from mailqueue.queues import QueueManager
from mailqueue.redact import redact_url
from mailqueue.redis_memory import RedisMemory, redis_full_error, redis_memory
from mailqueue.redis_server import RedisTarget
from mailqueue.settings import Settings
from mailqueue.smtp_url import SmtpConfig
from mailqueue.types import WorkerInfo
from mailqueue.worker_gates import gate_warnings
from mailqueue.workers import WorkerManager

# Redis memory used against maxmemory: a warning from here, unhealthy ("full") from there.
_NEAR_FULL, _FULL = 0.9, 0.98


class QueueStats(TypedDict):
    """One queue at a glance."""

    queue: str
    counts: dict[str, int]
    paused: bool
    workers: int
    completed_per_minute: list[int]
    failed_per_minute: list[int]


class QueueHealth(TypedDict):
    counts: dict[str, int]
    workers: int
    no_worker_can_send: NotRequired[bool]


class HealthReport(TypedDict):
    """`healthy` is false when Redis, its memory, the SMTP server or every worker of a queue
    fails; `warnings` say what is wrong but still works; `error` why Redis did not answer."""

    healthy: bool
    redis: dict[str, Any]
    queues: dict[str, QueueHealth]
    warnings: NotRequired[list[str]]
    smtp: NotRequired[dict[str, Any]]
    error: NotRequired[str]


class MemoryHealth(RedisMemory):
    state: str  # "ok", "near full" or "full"
    warning: str | None  # what to do about it, from "near full" on


class RedisInfo(TypedDict):
    """The Redis in use; on a cluster, summed over its masters (`nodes` of them)."""

    url: str | None
    source: str | None
    version: str | None
    mode: str | None
    nodes: int
    used_memory: int
    used_memory_peak: int
    maxmemory: int
    connected_clients: int
    ops_per_sec: int
    total_commands: int
    uptime_s: int
    memory: RedisMemory


class Monitoring:
    """Reads the state of the whole system, never raising: a failure is part of the report."""

    def __init__(self, client: aioredis.Redis, settings: Settings, redis: RedisTarget | None,
                 queues: QueueManager, workers: WorkerManager) -> None:
        self._client = client
        self._settings = settings
        self._redis = redis
        self._queues = queues
        self._workers = workers

    async def ping(self) -> None:
        """Raises when Redis does not answer within REDIS_COMMAND_TIMEOUT_S."""
        await self._client.ping()

    async def full_error(self, what: str) -> RedisFullError:
        """The one-line error for a write Redis refused at maxmemory: how full it is and
        what to do; `what` says what did not happen."""
        return await redis_full_error(self._client, what)

    async def get_queue_stats(self, queue: str) -> QueueStats:
        """Counts per state, paused flag, workers and throughput of one queue."""
        await self._queues.get_queue(queue)
        counted, workers, completed, failed = await asyncio.gather(
            self._queues.get_many_job_counts([queue]),
            self._workers.list_workers(queue),
            self._queues.get_metrics(queue, "completed", 60),
            self._queues.get_metrics(queue, "failed", 60),
        )
        return {
            "queue": queue, "counts": counted[queue]["counts"],
            "paused": counted[queue]["paused"], "workers": len(workers),
            "completed_per_minute": completed["per_minute"],
            "failed_per_minute": failed["per_minute"],
        }

    async def health_check(self) -> HealthReport:
        """Redis ping latency and version, and per queue: counts and workers."""
        report: HealthReport = {"healthy": True, "redis": {}, "queues": {}}
        warnings: list[str] = []
        try:
            started = time.perf_counter()
            await self._client.ping()
            latency_ms = (time.perf_counter() - started) * 1000
            info = (await node_infos(self._client, "server"))[0][1]
            memory = await self._memory_health()
            report["redis"] = {"url": redact_url(self._redis.url) if self._redis else None,
                               "source": self._redis.source if self._redis else None,
                               "ping_ms": round(latency_ms, 2),
                               "version": info.get("redis_version"), "memory": memory}
            if memory["warning"]:
                warnings.append(memory["warning"])
            if memory["state"] == "full":
                report["healthy"] = False
            every_worker: list[WorkerInfo] = []
            for name in await self._queues.list_queues(refresh=True):
                counts, workers = await asyncio.gather(
                    self._queues.get_job_counts(name), self._workers.list_workers(name)
                )
                every_worker += workers
                report["queues"][name] = {"counts": counts, "workers": len(workers)}
            # A worker whose SMTP server is down is a warning while another can send; a
            # queue whose every worker is down cannot deliver anything: unhealthy.
            gates = await self._workers.gate_states(every_worker)
            gate_notes, down_queues = gate_warnings(every_worker, gates)
            warnings += gate_notes
            for name in down_queues:
                report["healthy"] = False
                report["queues"][name]["no_worker_can_send"] = True
            report["smtp"] = await self._smtp_health()
            if report["smtp"].get("reachable") is False:
                report["healthy"] = False
        except Exception as exc:  # health is reported, never raised
            report["healthy"] = False
            report["error"] = redis_error_reason(exc, self._settings.redis_command_timeout_s)
        if warnings:
            report["warnings"] = warnings
        return report

    async def redis_info(self) -> RedisInfo:
        """What an operator wants to know about the Redis: version, memory, clients, load.

        On a cluster: memory, clients and load summed over the masters (`nodes` of them),
        uptime the shortest. `memory`: used against maxmemory with the fragmentation ratio,
        as /health reports it (the fullest master's on a cluster).
        """
        infos = [info for _, info in await node_infos(self._client)]
        memory = await redis_memory(self._client)
        first = infos[0]

        def total(field: str) -> int:
            return sum(int(info.get(field, 0)) for info in infos)

        return {
            "url": redact_url(self._redis.url) if self._redis else None,
            "source": self._redis.source if self._redis else None,
            "version": first.get("redis_version"),
            "mode": first.get("redis_mode"),
            "nodes": len(infos),
            "used_memory": total("used_memory"),
            "used_memory_peak": total("used_memory_peak"),
            "maxmemory": total("maxmemory"),
            "connected_clients": total("connected_clients"),
            "ops_per_sec": total("instantaneous_ops_per_sec"),
            "total_commands": total("total_commands_processed"),
            "uptime_s": min(int(info.get("uptime_in_seconds", 0)) for info in infos),
            "memory": memory,
        }

    async def _memory_health(self) -> MemoryHealth:
        """Used memory against maxmemory: state "ok", "near full" (90 %) or "full" (98 %)."""
        memory = MemoryHealth(**await redis_memory(self._client), state="ok", warning=None)
        ratio = memory["used_ratio"]
        used_mb = memory["used_memory"] / (1024 * 1024)
        limit_mb = memory["maxmemory"] / (1024 * 1024)
        if ratio is None or ratio < _NEAR_FULL:
            return memory
        memory["state"] = "full" if ratio >= _FULL else "near full"
        if memory["maxmemory_policy"] == "noeviction":
            consequence = ("it refuses new jobs" if memory["state"] == "full"
                           else "it will soon refuse new jobs")
        else:
            consequence = (f"policy {memory['maxmemory_policy']} evicts keys, which loses "
                           "jobs: BullMQ needs noeviction")
        memory["warning"] = (
            f"Redis memory is {memory['state']}: {used_mb:.1f} MB of {limit_mb:.1f} MB "
            f"maxmemory ({ratio:.0%}); {consequence}. Remove old completed and failed jobs "
            "or raise maxmemory."
        )
        return memory

    async def _smtp_health(self) -> dict[str, Any]:
        """Whether the SMTP server that workers would use answers (EHLO + NOOP)."""
        url = self._settings.smtp_url
        source = "SMTP_URL"
        if not url:
            url = await registered_sink_url(self._client, self._settings.queue_prefix)
            source = "development sink"
        if not url:
            return {"configured": False, "detail": "no SMTP_URL and no development sink running"}
        config = SmtpConfig.from_url(url)
        result: dict[str, Any] = {"configured": True, "source": source,
                                  "url": config.redacted_url()}
        result.update(await probe_smtp(config))
        return result
