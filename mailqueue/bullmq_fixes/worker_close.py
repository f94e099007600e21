"""Closing a worker to the last socket (docs/bullmq-notes.md, the worker classes' close).

bullmq's `Worker.close` closes its clients but leaves connections of their pools open
(ResourceWarning: unclosed transport, and a Redis connection per worker that lingers). Both
worker classes of mailqueue (RateLimitAwareWorker here, the native runtime's NativeWorker)
end their close with `release()`: the published gate state, the lock renewal, bullmq's own
close, then every socket of both clients.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


async def release(worker: Any, force: bool) -> None:
    """The end of a worker's close, once its jobs are done: `closed` emitted last."""
    await worker._holds.close()  # deletes the published state while Redis is still ours
    await worker.lockManager.close()
    try:
        await worker.backend.close(force=force)
    except Exception as err:
        worker.emit("error", err)
    await disconnect(worker)
    worker.closed = True
    worker.emit("closed")


async def disconnect(worker: Any) -> None:
    """Disconnect every socket of both clients (whatever created them)."""
    for connection in (worker.redisConnection, worker.blockingRedisConnection):
        client = getattr(connection, "conn", None)
        if client is None:
            continue
        try:
            await client.connection_pool.disconnect(inuse_connections=True)
        except Exception as err:
            log.debug("Worker %s: disconnecting: %s", worker.workerName, err)
