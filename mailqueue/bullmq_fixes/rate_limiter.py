"""The rate limiter (docs/bullmq-notes.md #3), and a clean close while limited.

One workaround of bullmq 3.4.4, named after the bug it covers; its canary test
(tests/mailqueue/test_bullmq_canaries.py) fails the day bullmq fixes the bug, and then this
module goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from bullmq import Job, Worker
from bullmq.lock_manager import LockManager

from mailqueue.bullmq_fixes.subsecond_delays import enable_subsecond_delays
from mailqueue.bullmq_fixes.worker_close import finish_close
from mailqueue.worker_gates import WorkerGate, WorkerHolds

log = logging.getLogger(__name__)

# The moveToActive script answers "rate limited for N more ms"; bullmq stores that *delay* in
# `limitUntil` as if it were a timestamp and never reads it. The worker then blocks on the
# queue's marker for `drainDelay` (5 s) before it asks again: `{max: 5, duration: 1000}` ran 5
# jobs per 5 s. Node BullMQ turns the delay into a deadline and, while it lies ahead, sleeps
# until it and then asks for a job directly (no marker wait). This Worker does the same.
# The limit itself lives in Redis (`<prefix>:<queue>:limiter`), so it is shared by every
# worker process of the queue.


def _now_ms() -> int:
    return int(time.time() * 1000)


class RateLimitAwareWorker(Worker):  # type: ignore[misc]  # bullmq is untyped
    """A bullmq Worker that honours `limiter` (and `Queue.setGlobalRateLimit`), probes the
    Redis version before it runs (sub-second delays) and closes cleanly (see below)."""

    def __init__(self, name: str, processor: Any, opts: dict[str, Any] | None = None) -> None:
        super().__init__(name, processor, cast(Any, opts or {}))
        # Set by close/pause to cut a rate-limit sleep short.
        self._limit_wakeup = asyncio.Event()
        # Clean close: see close().
        self.lockManager = _LockManagerKeptWhileDraining(
            self,
            lock_renew_time=self.opts["lockRenewTime"],
            lock_duration=self.opts["lockDuration"],
            worker_id=self.id,
            worker_name=self.workerName,
        )
        self._run_finished: asyncio.Future[None] | None = None
        self._teardown: asyncio.Future[None] | None = None
        self._draining = False
        self._holds = WorkerHolds(self, on_release=self._release_hold)
        self._holding: asyncio.Future[None] | None = None

    def hold(self, gate: WorkerGate) -> None:
        """Take no job while `gate` blocks (a handler's transport is down): bullmq's pause,
        without waiting for the active jobs (the caller is one of them), then resume."""
        if self._holds.hold(gate):
            log.warning("Worker %s: %s; taking no jobs until it is back", self.workerName,
                        gate.describe().get("error") or "held")
            self._holding = asyncio.ensure_future(self.pause(do_not_wait_active=True))

    def _release_hold(self) -> None:
        if not self.closing:
            self.resume()

    async def moveToActive(self, token: str) -> Job | None:
        result = await self.backend.moveToActive(token, self.opts)
        job_data, job_id, limit_delay, delay_until = result or (None, None, 0, 0)
        delay_ms = int(limit_delay or 0)
        limit_until = _now_ms() + delay_ms if delay_ms > 0 else 0
        job: Job | None = await self.nextJobFromJobData(
            job_data, job_id, limit_until, delay_until or 0, token
        )
        return job

    async def getNextJob(self, token: str) -> Job | None:
        delay_ms = self.limitUntil - _now_ms()
        if delay_ms <= 0 or self.closing:
            job: Job | None = await super().getNextJob(token)
            return job
        try:
            await asyncio.wait_for(self._limit_wakeup.wait(), delay_ms / 1000)
        except TimeoutError:
            pass
        if self.closing or self.paused:
            return None
        # The limit has expired: ask directly. The jobs are in `wait` already, and the marker
        # that announced them was consumed, so a marker wait would sleep for drainDelay.
        job = await self.moveToActive(token)
        if job is not None:
            self.emit("active", job, "waiting")
        return job

    async def pause(self, do_not_wait_active: bool = False) -> None:
        self._limit_wakeup.set()
        await super().pause(do_not_wait_active)

    def resume(self) -> None:
        self._limit_wakeup.clear()
        super().resume()

    # --- Clean close (docs/bullmq-notes.md #3) -------------------------------------------------
    # bullmq's close() waits for the tasks in `processing` *when close is called*, then closes
    # the connections. But a getNextJob task that is inside moveToActive at that moment still
    # gets a job, and the run loop turns it into a new processJob task nobody waits for: its
    # moveToCompleted ran on the closed client, which reconnected (a new socket, never closed:
    # ResourceWarning "unclosed Connection ... client_name=<prefix>:<queue>:w:<name>"), and
    # redis-py's pool.release of that connection raised KeyError, so the job was *failed*
    # with a KeyError (moveToFailed reconnecting once more). The run loop also ends as soon as
    # one job finishes while closing: it closed the lock manager while other jobs still ran,
    # and the jobs its pending getNextJob tasks fetched afterwards were never run (left
    # active until their locks expired). Here close() runs those jobs too, waits until the run
    # loop has ended and every task is done (the lock manager renewing locks meanwhile), and
    # only then closes the lock manager and both connections. abandon_jobs() turns a
    # graceful close into a forced one.

    async def run(self) -> None:
        if self.closing:  # closed before it ran: touch nothing
            return
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_finished = finished
        try:
            await enable_subsecond_delays(self)
            if not self.closing:
                await super().run()
        finally:
            finished.set_result(None)

    async def processJob(self, job: Job, token: str) -> None:
        if self.forceClosing:
            # Fetched by a moveToActive that was in flight when the jobs were abandoned: do not
            # start it. Its lock expires and a stalled-job check puts it back in `wait`.
            return
        await super().processJob(job, token)

    def abandon_jobs(self) -> None:
        """Force a close in progress: cancel the running jobs, neither completing nor failing
        them (their locks expire and they come back as stalled jobs)."""
        self.forceClosing = True
        self.lockManager.cancel_all_jobs("worker force-closed")
        self.cancelProcessing()

    async def close(self, force: bool = False) -> None:
        """Stop taking jobs, wait for every task the worker started, then close the lock
        manager and both Redis connections. `force`: abandon the running jobs first."""
        self._limit_wakeup.set()
        self.closing = True
        self.paused = False
        self.resume_event.set()
        if self.waiting is not None and not self.waiting.done():
            self.waiting.cancel()
        if force:
            self.abandon_jobs()
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._close_when_idle(force))
        cancelled = False
        while True:  # like bullmq: a cancelled close still finishes its teardown
            try:
                await asyncio.shield(self._teardown)
                break
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError()

    async def _close_when_idle(self, force: bool) -> None:
        self._draining = True
        try:
            await self._wait_for_tasks()
        finally:
            self._draining = False
        await finish_close(self, force)

    async def _wait_for_tasks(self) -> None:
        """Until the run loop has ended and every task in `processing` is done."""
        while True:
            if self.forceClosing:
                self.cancelProcessing()
            run_over = self._run_finished is None or self._run_finished.done()
            if run_over:
                self._start_orphaned_jobs()
            waiters: set[asyncio.Future[Any]] = {t for t in self.processing if not t.done()}
            if not run_over and self._run_finished is not None:
                waiters.add(self._run_finished)
            if not waiters:
                break
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        # run() stops the stalled-jobs timer without waiting for a check in flight.
        timer = getattr(self, "stalledCheckTimer", None)
        timer_task = getattr(timer, "_task", None)
        if isinstance(timer_task, asyncio.Future):
            await asyncio.gather(timer_task, return_exceptions=True)

    def _start_orphaned_jobs(self) -> None:
        """Process the jobs of the getNextJob tasks the run loop left behind when it ended.

        A getNextJob task inside moveToActive when the loop ended still gets a job, which is
        then active in Redis: nobody would run it, and it would wait for its lock to expire
        and come back as a stalled job. Run it, as the loop would have.
        """
        for task in [t for t in self.processing if t.done()]:
            self.processing.discard(task)
            if task.cancelled() or task.exception() is not None:
                continue
            job = task.result()
            if isinstance(job, Job):
                self.processing.add(asyncio.ensure_future(self.processJob(job, job.token)))


class _LockManagerKeptWhileDraining(LockManager):  # type: ignore[misc]  # untyped
    """bullmq's run() closes the lock manager when its loop ends; while a close drains the
    jobs that are still running, their locks must keep being renewed: the close closes it."""

    async def close(self) -> None:
        if getattr(self.worker, "_draining", False):
            return
        await super().close()
