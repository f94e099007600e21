"""How full Redis is, and what to say when it is full.

`redis_memory()` reads INFO memory (used, maxmemory, policy, fragmentation; the fullest
master of a cluster); `is_redis_full()` tells a write refused at maxmemory (policy
noeviction) from other errors, and `redis_full_error()` makes the one-line error an operator
acts on. The overview, /workers, /health and every write path use them.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, ResponseError

from mailqueue.cluster import node_infos
from mailqueue.errors import RedisFullError


def is_redis_full(exc: BaseException) -> bool:
    """Whether Redis refused a write because it is at `maxmemory` (policy noeviction)."""
    # redis-py raises OutOfMemoryError (its message without the "OOM" code); inside a Lua
    # script or a pipeline the reply may come as a plain ResponseError with the text.
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "used memory > 'maxmemory'" in str(exc)
    )


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


class RedisMemory(TypedDict):
    used_memory: int
    maxmemory: int  # 0: no limit
    maxmemory_policy: str | None
    used_ratio: float | None
    fragmentation_ratio: float | None
    node: NotRequired[str]  # on a cluster, the fullest master


async def redis_memory(client: aioredis.Redis) -> RedisMemory:
    """Used memory against `maxmemory` (0: no limit), the policy, the share used, and the
    fragmentation ratio (RSS over used; None where INFO has none).

    On a cluster, the fullest master's (the one that refuses writes first; with a hash-tag
    prefix every queue lives on one master), with `node` naming it.
    """
    readings = []
    for node, info in await node_infos(client, "memory"):
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        reading: RedisMemory = {
            "used_memory": used,
            "maxmemory": limit,
            "maxmemory_policy": info.get("maxmemory_policy"),
            "used_ratio": round(used / limit, 3) if limit else None,
            "fragmentation_ratio": _ratio(info.get("mem_fragmentation_ratio")),
        }
        if node:
            reading["node"] = node
        readings.append(reading)
    return max(readings, key=lambda r: (r["used_ratio"] or 0.0, r["used_memory"]))


def _ratio(value: Any) -> float | None:
    try:
        return round(float(value), 2) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


async def redis_full_error(client: aioredis.Redis, what: str) -> RedisFullError:
    """The error for a write that Redis refused with OOM, saying how full it is and what to do."""
    detail = ""
    try:  # reads still work at maxmemory
        memory = await redis_memory(client)
        detail = (f" (using {_megabytes(memory['used_memory'])} of its maxmemory "
                  f"{_megabytes(memory['maxmemory'])}, policy {memory['maxmemory_policy']})")
    except Exception:
        pass
    return RedisFullError(
        f"Redis is out of memory{detail} and refuses writes: {what}. Free memory by removing "
        "old jobs (clean the completed and failed ones; lower JOB_REMOVE_ON_COMPLETE and "
        "JOB_REMOVE_ON_FAIL), or give Redis more memory (raise maxmemory), then add again."
    )
