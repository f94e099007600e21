"""Sub-second delays (docs/bullmq-notes.md #2): a worker probes the Redis version first.

One workaround of bullmq 3.4.4, named after the bug it covers; its canary test
(tests/mailqueue/test_bullmq_canaries.py) fails the day bullmq fixes the bug, and then this
module goes.
"""

from __future__ import annotations

from bullmq import Worker

# Worker.waitForJob rounds its block timeout up to whole seconds unless the connection's
# `canDoubleTimeout` capability is set, and only `RedisConnection.getRedisVersion()` sets it,
# which the Worker never calls: a 200 ms delayed job ran after ~1.1 s. Probing the version on
# both worker connections before the worker runs gives ~250 ms.


async def enable_subsecond_delays(worker: Worker) -> None:
    """Run bullmq's Redis version probe on the worker's connections (sets the capabilities)."""
    for connection in (worker.redisConnection, worker.blockingRedisConnection):
        if connection is not None:
            await connection.getRedisVersion()
