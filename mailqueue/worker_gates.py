"""Gates a worker waits on before it takes a job, and their state in Redis for the dashboard.

A handler that finds its worker cannot do the work (the SMTP transport's circuit breaker is
open: mailqueue.mail.breaker) puts its job back and calls `hold_worker(job, gate)`. The
worker then takes no job until the gate lets them through again: the native loop waits on
the gate before moveToActive and asks no fetch-next meanwhile; bullmq's Worker is paused and
resumed. Holding is local to one worker: the others of the queue go on taking jobs.

Workers are other processes than the dashboard, so while a gate blocks a worker its state is
published in `<prefix>:__mailqueue__:breaker:<worker name>` (a hash with a TTL, refreshed
at each state change and every REFRESH_S, deleted when the gate opens or the worker closes;
the TTL clears the hash of a worker that died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

import redis.asyncio as aioredis

from mailqueue.types import WorkerInfo

log = logging.getLogger(__name__)

REFRESH_S = 20.0
TTL_S = 60  # a dead worker's state disappears within this


class WorkerGate(Protocol):
    """What a worker needs of a gate (a CircuitBreaker is one)."""

    @property
    def blocked(self) -> bool: ...

    async def wait_open(self) -> None: ...

    @property
    def version(self) -> int: ...  # changes with the state

    async def wait_changed(self, seen: int) -> None: ...

    def describe(self) -> dict[str, str]: ...


def gate_key(prefix: str, worker_name: str) -> str:
    return f"{prefix}:__mailqueue__:breaker:{worker_name}"


def hold_worker(job: Any, gate: WorkerGate) -> None:
    """Make the worker that runs `job` wait on `gate` (no-op outside a worker)."""
    hold = getattr(job.queue, "hold", None)
    if callable(hold):
        hold(gate)


class WorkerHolds:
    """The gates of one worker: which one blocks it, and publishing them while they do."""

    def __init__(self, worker: Any, on_release: Callable[[], None]) -> None:
        self._worker = worker
        self._on_release = on_release
        self._watches: dict[WorkerGate, asyncio.Task[None]] = {}
        self._closed = False

    def hold(self, gate: WorkerGate) -> bool:
        """Start waiting on `gate`; False if it does not block or is held already."""
        if self._closed or not gate.blocked or gate in self._watches:
            return False
        self._watches[gate] = asyncio.ensure_future(self._watch(gate))
        return True

    def blocking(self) -> WorkerGate | None:
        return next((gate for gate in self._watches if gate.blocked), None)

    async def close(self) -> None:
        """Stop publishing (the hashes are deleted) before the worker's connections close."""
        self._closed = True
        watches = list(self._watches.values())
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)

    @property
    def key(self) -> str:
        worker = self._worker
        return gate_key(worker.prefix, worker.workerName or worker.id)

    async def _watch(self, gate: WorkerGate) -> None:
        client: aioredis.Redis = self._worker.client
        try:
            # Not only the cancel: asyncio.wait_for (3.11) drops a cancel that comes as the
            # wait ends, and a watch that missed it would keep close() waiting.
            while gate.blocked and not self._closed:
                seen = gate.version
                await self._publish(client, gate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gate.wait_changed(seen), REFRESH_S)
        finally:
            del self._watches[gate]
            with contextlib.suppress(Exception):
                await asyncio.shield(client.delete(self.key))
            if self.blocking() is None:
                self._on_release()

    async def _publish(self, client: aioredis.Redis, gate: WorkerGate) -> None:
        state: dict[str, str] = {**gate.describe(), "queue": str(self._worker.name),
                 "published_ms": str(int(time.time() * 1000))}
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                pipe.hset(self.key, mapping=cast(Any, state))  # redis-py's Mapping is invariant
                pipe.expire(self.key, TTL_S)
                await pipe.execute()
        except Exception as exc:  # the dashboard's view only; the hold itself goes on
            log.warning("Worker %s: cannot publish its %s state: %s",
                        self._worker.workerName, state.get("kind"), exc)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_gates(client: aioredis.Redis, prefix: str,
                     names: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """Worker name -> its published gate state, for the workers that have one.

    Each: kind, state, target, failures (int), error, since_ms / next_try_ms (int or None),
    next_try_in_s (float or None).
    """
    wanted = sorted({n for n in names if n})
    raws = await asyncio.gather(*(client.hgetall(gate_key(prefix, n)) for n in wanted))
    now = int(time.time() * 1000)
    found: dict[str, dict[str, Any]] = {}
    for name, raw in zip(wanted, raws, strict=True):
        if not raw:
            continue
        state: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
        for field in ("failures", "probes"):
            state[field] = int(state[field]) if state.get(field, "").isdigit() else 0
        for field in ("since_ms", "next_try_ms", "published_ms"):
            state[field] = int(state[field]) if state.get(field, "").isdigit() else None
        next_try = state["next_try_ms"]
        state["next_try_in_s"] = max(0.0, (next_try - now) / 1000) if next_try else None
        found[name] = state
    return found


def gate_warnings(workers: Iterable[WorkerInfo], gates: dict[str, dict[str, Any]]
                  ) -> tuple[list[str], set[str]]:
    """/health's warnings about workers that cannot send, and the queues none can serve."""
    warnings: list[str] = []
    down_queues: set[str] = set()
    by_queue: dict[str, list[WorkerInfo]] = {}
    for worker in workers:
        by_queue.setdefault(worker["queue"], []).append(worker)
    for queue, members in sorted(by_queue.items()):
        down = [(w["name"], gates[w["name"]]) for w in members
                if w["name"] is not None and w["name"] in gates]
        for name, gate in down:
            warnings.append(
                f"worker {name} of queue {queue!r}: SMTP down ({gate['target']}, "
                f"{gate['failures']} connection failure(s): {gate['error']}); it takes no "
                "jobs until a probe gets through"
            )
        if down and len(down) == len(members):
            down_queues.add(queue)
            warnings.append(f"queue {queue!r}: no worker can send: every one has its SMTP "
                            "server down")
    return warnings, down_queues
