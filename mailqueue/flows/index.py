"""The flow index (the root flows added through add_flow, newest kept) and the flow metrics
read from it: flows by state, parents waiting for children, how long finished flows took."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import TypedDict

import redis.asyncio as aioredis

from mailqueue.errors import MailQueueError
from mailqueue.flows.tree import int_or_none, parse_flow_id, read_nodes
from mailqueue.keys import Keys
from mailqueue.queues import QueueManager

# Score = when the flow was added (ms), member "<queue>:<root job id>" (the flow id).
FLOW_INDEX_SUFFIX = "__mailqueue__:flows"
FLOW_INDEX_CAP = 5_000


class WaitingChildren(TypedDict):
    total: int
    by_queue: dict[str, int]


class FlowDurations(TypedDict):
    """finishedOn - timestamp of the finished tracked flows, in ms (None when there is none)."""

    count: int
    avg: float | None
    p50: int | None
    p95: int | None
    min: int | None
    max: int | None


class FlowMetrics(TypedDict):
    tracked: int
    by_state: dict[str, int]
    waiting_children: WaitingChildren
    durations_ms: FlowDurations


def _percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class FlowIndex:
    """The flows added under one prefix, and what they add up to."""

    def __init__(self, client: aioredis.Redis, prefix: str, queues: QueueManager) -> None:
        self._client = client
        self.prefix = prefix
        self._queues = queues
        # Queues flow jobs were added to from here: QueueManager's discovery is cached for a
        # moment and would miss a queue that only just got its first (flow) job.
        self._flow_queues: set[str] = set()

    @property
    def key(self) -> str:
        return f"{self.prefix}:{FLOW_INDEX_SUFFIX}"

    async def record(self, flow_id: str, queues: Iterable[str]) -> None:
        """Note a flow just added (its root's flow id, the queues its jobs went to)."""
        self._flow_queues.update(queues)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(self.key, {flow_id: int(time.time() * 1000)})
        pipe.zremrangebyrank(self.key, 0, -FLOW_INDEX_CAP - 1)
        await pipe.execute()

    async def metrics(self) -> FlowMetrics:
        """Flows by state and how long finished flows took.

        `by_state` counts the root flows added through add_flow (the newest FLOW_INDEX_CAP);
        `waiting_children` counts every parent job waiting for its children in every queue
        under the prefix, so flows added by Node apps or other producers show there too.
        Durations are finishedOn - timestamp of finished (completed or failed) tracked flows.
        """
        keys = []
        for member in await self._client.zrange(self.key, 0, -1):
            try:
                queue, job_id = parse_flow_id(str(member))
            except MailQueueError:  # not written by record(): a hand-edited index
                continue
            keys.append(Keys(self.prefix, queue).job(job_id))
        reads = await read_nodes(self._client, keys) if keys else []
        by_state: dict[str, int] = {}
        durations: list[int] = []
        for read in reads:
            state = read.state if read.exists else "removed"
            by_state[state] = by_state.get(state, 0) + 1
            if state in ("completed", "failed"):
                finished = int_or_none(read.fields.get("finishedOn"))
                started = int_or_none(read.fields.get("timestamp"))
                if finished is not None and started is not None:
                    durations.append(max(0, finished - started))
        queues = sorted(set(await self._queues.list_queues()) | self._flow_queues)
        waiting: dict[str, int] = {}
        if queues:
            pipe = self._client.pipeline(transaction=False)
            for name in queues:
                pipe.zcard(Keys(self.prefix, name).waiting_children)
            for name, count in zip(queues, await pipe.execute(), strict=True):
                if count:
                    waiting[name] = int(count)
        durations.sort()
        return {
            "tracked": len(reads),
            "by_state": by_state,
            "waiting_children": {"total": sum(waiting.values()), "by_queue": waiting},
            "durations_ms": {
                "count": len(durations),
                "avg": round(sum(durations) / len(durations), 1) if durations else None,
                "p50": _percentile(durations, 0.50) if durations else None,
                "p95": _percentile(durations, 0.95) if durations else None,
                "min": durations[0] if durations else None,
                "max": durations[-1] if durations else None,
            },
        }
