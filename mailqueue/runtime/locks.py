"""The native worker's periodic work besides jobs: lock renewal and the stalled-jobs check.

Lock renewal is bullmq's own LockManager (a port of Node's): every lockRenewTime / 2 it
renews, in one `extendLocks` script call, the lock of every tracked job that was not renewed
for lockRenewTime / 2, so that however many jobs are active it is one round trip per
interval. Tracking a job is a dict insert: nothing per job reaches Redis.

The stalled-jobs check runs `moveStalledJobsToWait` at start and then every stalledInterval,
as Node's Worker does (`startStalledCheckTimer`): jobs whose lock expired (their worker died)
go back to `wait`, or fail after maxStalledCount stalls. The script itself keeps the check to
one per interval across all workers of the queue (the `stalled-check` key).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


class StalledJobsCheck:
    """Runs the stalled-jobs script for `worker` until stopped.

    Stopping never cancels a script call in flight: cancelling a command on a
    single-connection client drops the connection, which would then reconnect after the
    worker closed it. `stop()` wakes the sleep and waits for the call to return.
    """

    def __init__(self, worker: Any) -> None:
        self._worker = worker
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and not self._stop.is_set():
            self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        interval = self._worker.opts["stalledInterval"] / 1000
        while not self._stop.is_set():
            await self.check()
            try:
                await asyncio.wait_for(self._stop.wait(), interval)
            except TimeoutError:
                pass

    async def check(self) -> None:
        worker = self._worker
        try:
            stalled = await worker.backend.moveStalledJobsToWait(
                worker.opts["maxStalledCount"], worker.opts["stalledInterval"])
        except Exception as err:
            if not worker.closing:
                worker.emit("error", err)
            return
        for job_id in stalled or ():
            worker.emit("stalled", job_id)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
