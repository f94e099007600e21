"""NativeWorker: the processing loop of Node BullMQ's Worker over bullmq-python's scripts.

bullmq-python's run loop fetches every job with its own moveToActive call (`fetch_next` is
hard-coded False), and wakes with an `asyncio.wait` over all its tasks for every job. Node's
Worker, and this one, work in slots:

- the loop calls moveToActive only to fill a free slot (at start, after being idle);
- a slot runs a job, then finishes it with moveToFinished *with fetch-next*: the script
  hands back the next job (locked with the slot's token), which the slot runs at once;
  the completions of all slots are pipelined (`ScriptPipe`), one round trip for all
  the slots finishing in the same moment;
- a slot whose fetch-next brought nothing ends; when the queue is drained the loop blocks on
  the queue's marker (BZPOPMIN, the blocking connection), as bullmq 3.4.4 does;
- the rate limit: a script says "limited for N ms"; the loop sleeps until then and asks
  moveToActive directly (the marker that announced the jobs is gone);
- failures go through bullmq's Job.moveToFailed (attempts, back-off, UnrecoverableError,
  stack traces; retryJob / moveToDelayed / moveToFailed), so retries behave as before.

Every key, script argument and event-stream entry is what bullmq's scripts write: Node
workers and these share a queue. Keys and options are packed by bullmq's own `Scripts`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from typing import Any, cast

from bullmq import Job, Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError, WaitingChildrenError
from bullmq.scripts import raw2NextJobData

from mailqueue.bullmq_fixes import enable_subsecond_delays
from mailqueue.bullmq_fixes.worker_close import finish_close
from mailqueue.runtime.locks import StalledJobsCheck
from mailqueue.runtime.scripts import ScriptPipe
from mailqueue.worker_gates import WorkerGate, WorkerHolds

log = logging.getLogger(__name__)

# bullmq caps a blocking wait at 10 s (a reconnect is noticed within that).
_MAX_BLOCK_S = 10.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class NativeWorker(Worker):  # type: ignore[misc]  # bullmq is untyped
    """A bullmq Worker (same options, events, connections, client names) with Node's loop.

    Events emitted: active, completed, failed, stalled, error, paused, resumed, closed.

    `hold(gate)`: take no job while `gate` blocks (a handler's transport is down).
    """

    running: bool
    paused: bool

    def __init__(self, name: str, processor: Any, opts: dict[str, Any] | None = None) -> None:
        super().__init__(name, processor, cast(Any, {**(opts or {}), "autorun": False}))
        self._pipe = ScriptPipe(self.client)
        self._finish_script = self.scripts.commands["moveToFinished"]
        self._stalled = StalledJobsCheck(self)
        self._slots: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # a slot ended, or pause/resume/close
        self._tokens = itertools.count(1)
        self._drained = False  # the last fetch found nothing: wait on the marker
        self._limit_until = 0  # rate limited until (ms); no fetch before
        self._block_until = 0  # a delayed job is due then (ms): block until it
        self._run_finished: asyncio.Future[None] | None = None
        self._teardown: asyncio.Future[None] | None = None
        self._holds = WorkerHolds(self, on_release=self._wake.set)

    @property
    def script_pipe(self) -> ScriptPipe:
        return self._pipe

    # --- The loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        if self.closing or self.running:
            return
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_finished = finished
        try:
            # Sets the connections' capabilities (sub-second block timeouts on Redis >= 6).
            await enable_subsecond_delays(self)
            await self._ensure_client_names()
            await self._pipe.prepare(self._finish_script)
            if self.closing:
                return
            self.running = True
            self.lockManager.start()
            self._stalled.start()
            await self._loop()
        finally:
            self.running = False
            finished.set_result(None)

    async def _loop(self) -> None:
        concurrency = self.opts["concurrency"]
        while not self.closing:
            if self.paused or len(self._slots) >= concurrency:
                await self._sleep(None)
                continue
            gate = self._holds.blocking()
            if gate is not None:
                await self._wait_gate(gate)
                # Jobs came while held, and their marker may be gone: ask directly.
                self._drained = False
                continue
            limited = self._limit_until - _now_ms()
            if limited > 0:
                await self._sleep(limited / 1000)
                continue
            if self._drained:
                await self._wait_for_marker()
                if self.closing or self.paused or self._block_until > _now_ms():
                    continue
            token = f"{self.id}:{next(self._tokens)}"
            job = await self._fetch(token)
            # A job fetched while a close began is run (graceful close) or, when the jobs
            # are abandoned, left locked: its lock expires and a stalled check requeues it.
            if job is not None and not self.forceClosing:
                self._start_slot(job, token)

    async def _sleep(self, timeout: float | None) -> None:
        """Until a slot ends, pause/resume/close, or `timeout` s."""
        self._wake.clear()
        if timeout is None:
            await self._wake.wait()
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _wait_gate(self, gate: WorkerGate) -> None:
        """Until `gate` opens, or a close / pause interrupts."""
        self._wake.clear()
        waits = {asyncio.ensure_future(gate.wait_open()), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    def hold(self, gate: WorkerGate) -> None:
        """Take no job while `gate` blocks; its state is published for the dashboard."""
        if self._holds.hold(gate):
            log.warning("Worker %s: %s; taking no jobs until it is back", self.workerName,
                        gate.describe().get("error") or "held")
            self._wake.set()

    async def _wait_for_marker(self) -> None:
        """BZPOPMIN on the queue's marker (the blocking connection), as bullmq 3.4.4 does;
        the marker's score is the time a delayed job is due (0: a job is waiting)."""
        if self._block_until:
            timeout = min(max((self._block_until - _now_ms()) / 1000,
                              self.minimumBlockTimeout), _MAX_BLOCK_S)
        else:
            timeout = max(self.opts.get("drainDelay", 5), self.minimumBlockTimeout)
        if not self.backend.capabilities.get("canDoubleTimeout", False):
            timeout = math.ceil(timeout)
        self.waiting = asyncio.ensure_future(self.backend.waitForJob(timeout))
        try:
            result = await self.waiting
        except asyncio.CancelledError:
            if self.closing or self.paused:
                return  # cut short by close/pause
            raise
        except Exception as err:
            if not self.closing:
                self.emit("error", err)
                await asyncio.sleep(0.1)  # a Redis that is away: no busy loop
            return
        finally:
            self.waiting = None
        self._block_until = int(result[2]) if result and result[1] else 0

    async def _fetch(self, token: str) -> Job | None:
        """moveToActive once (bullmq's call: token, lock duration, limiter)."""
        async def move_to_active() -> Any:
            return await self.backend.moveToActive(token, self.opts)

        raw = await self.retryIfFailed(move_to_active, {
            "delay_in_ms": self.opts.get("runRetryDelay"), "only_emit_error": True})
        return await self._next_job(raw, token, fetched=raw is not None)

    async def _next_job(self, raw: Any, token: str, fetched: bool) -> Job | None:
        """The job in a moveToActive / fetch-next reply; notes the limit and delay it gives."""
        if not raw:
            return None
        job_data, job_id, limit_delay, delay_until = raw
        if limit_delay and int(limit_delay) > 0:
            self._limit_until = _now_ms() + int(limit_delay)
        if delay_until:
            self._block_until = int(delay_until)
        if not job_data:
            if fetched and not (limit_delay and int(limit_delay) > 0):
                self._drained = True
            return None
        self._drained = False
        # bullmq's: builds the Job and, for a job scheduler's job, adds its next iteration.
        job: Job | None = await self.nextJobFromJobData(job_data, job_id, 0, 0, token)
        if job is not None:
            self.emit("active", job, "waiting")
        return job

    # --- Slots --------------------------------------------------------------------------------

    def _start_slot(self, job: Job, token: str) -> None:
        task = asyncio.ensure_future(self._slot(job, token))
        self._slots.add(task)
        task.add_done_callback(self._slot_done)

    def _slot_done(self, task: asyncio.Task[None]) -> None:
        self._slots.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            self.emit("error", task.exception())

    async def _slot(self, job: Job | None, token: str) -> None:
        """Run jobs one after the other: each finish fetches the next for this slot."""
        while job is not None and not self.forceClosing:
            job = await self._run_job(job, token)

    def _fetch_next(self) -> bool:
        return not (self.closing or self.paused or self._holds.blocking())

    async def _run_job(self, job: Job, token: str) -> Job | None:
        """Process one job, finish it, and return the next one the finish fetched."""
        for option in ("removeOnComplete", "removeOnFail"):
            if option not in job.opts and option in self.opts:
                job.opts[option] = self.opts[option]
        entry = (job, token)
        self.jobs.add(entry)
        self.lockManager.track_job(job.id, token, _now_ms())
        try:
            if job.deferredFailure:
                raise UnrecoverableError(job.deferredFailure)
            result = await self.processor(job, token)
            if self.forceClosing:
                return None
            return await self._complete(job, token, result)
        except (DelayedError, WaitingChildrenError):
            return None  # the handler moved the job itself
        except Exception as err:
            if self.forceClosing:
                return None  # abandoned: neither completed nor failed
            # In the except block: Job.moveToFailed records traceback.format_exc().
            return await self._fail(job, token, err)
        finally:
            self.jobs.discard(entry)
            self.lockManager.untrack_job(job.id)

    async def _complete(self, job: Job, token: str, result: Any) -> Job | None:
        fetch = self._fetch_next()
        keys, args = self.scripts.moveToCompletedArgs(
            job, result, job.opts.get("removeOnComplete", False), token, fetch)
        reply = await self._pipe.call(self._finish_script, keys, args)
        if isinstance(reply, int) and reply < 0:
            raise self.scripts.finishedErrors({"code": reply, "jobId": job.id,
                                               "command": "moveToFinished", "state": "active"})
        job.returnvalue = result
        job.finishedOn = args[1]
        job.attemptsMade += 1
        self.emit("completed", job, result)
        return await self._next_job(raw2NextJobData(reply) if reply else None, token, fetch)

    async def _fail(self, job: Job, token: str, err: Exception) -> Job | None:
        fetch = self._fetch_next()
        try:
            raw = await job.moveToFailed(err, token, fetch)
            self.emit("failed", job, err)
        except Exception as error:
            self.emit("error", error, job)
            return None
        return await self._next_job(raw, token, fetch)

    # --- Pause and close ----------------------------------------------------------------------

    async def pause(self, do_not_wait_active: bool = False) -> None:
        """Stop taking jobs; unless `do_not_wait_active`, wait for the active ones."""
        if not self.paused:
            self.paused = True
            self._interrupt()
            if not do_not_wait_active:
                await _shielded(self._wait_slots())
        self.emit("paused")

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._wake.set()
            self.emit("resumed")

    def _interrupt(self) -> None:
        self._wake.set()
        if self.waiting is not None and not self.waiting.done():
            self.waiting.cancel()

    async def _wait_slots(self) -> None:
        while self._slots:
            await asyncio.wait(set(self._slots))

    def abandon_jobs(self) -> None:
        """Force a close in progress: cancel the running jobs, neither completing nor failing
        them (their locks expire and they come back as stalled jobs)."""
        self.forceClosing = True
        self.lockManager.cancel_all_jobs("worker force-closed")
        for task in self._slots:
            task.cancel()

    async def close(self, force: bool = False) -> None:
        """Stop taking jobs, run to the end the active ones and any a fetch in flight brings,
        then close the lock renewal, the stalled check and both connections."""
        self.closing = True
        self.paused = False
        self._interrupt()
        if force:
            self.abandon_jobs()
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._close_when_idle(force))
        await _shielded(self._teardown)

    async def _close_when_idle(self, force: bool) -> None:
        if self._run_finished is not None:
            await self._run_finished  # the loop ends after a moveToActive in flight
        await self._wait_slots()  # the lock manager keeps their locks meanwhile
        await self._pipe.idle()
        await finish_close(self, force, stop_stalled_check=self._stalled.stop)


async def _shielded(awaitable: Any) -> None:
    """Await to the end even if cancelled (as bullmq's close), then re-raise the cancel."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()
