"""The end of a worker's close, shared by RateLimitAwareWorker (rate_limiter.py) and the
native runtime's NativeWorker (mailqueue/runtime/loop.py), once their jobs are done.

bullmq's `Worker.close` closes its clients but leaves connections of their pools open (an
"unclosed transport" ResourceWarning, and a Redis connection per closed worker that
lingers): `finish_close` disconnects every socket of both clients after bullmq's own close.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def finish_close(worker: Any, force: bool,
                       stop_stalled_check: Callable[[], Awaitable[None]] | None = None) -> None:
    """The published gate state, `stop_stalled_check` (a worker that runs its own), the lock
    renewal, bullmq's close, then every socket; `closed` is emitted last."""
    await worker._holds.close()  # deletes the published state while Redis is still ours
    if stop_stalled_check is not None:
        await stop_stalled_check()
    await worker.lockManager.close()
    try:
        await worker.backend.close(force=force)
    except Exception as err:
        worker.emit("error", err)
    await _disconnect(worker)
    worker.closed = True
    worker.emit("closed")


async def _disconnect(worker: Any) -> None:
    """Disconnect every socket of both clients (whatever created them)."""
    for connection in (worker.redisConnection, worker.blockingRedisConnection):
        client = getattr(connection, "conn", None)
        if client is None:
            continue
        try:
            await client.connection_pool.disconnect(inuse_connections=True)
        except Exception as err:
            log.debug("Worker %s: disconnecting: %s", worker.workerName, err)
