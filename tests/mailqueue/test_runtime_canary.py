"""Canary (issue 12): each scenario runs on Node BullMQ's real Worker (tests/node/harness.mjs)
and on our native worker (mailqueue/runtime, through WorkerManager), each on a fresh queue of
the same Redis, and what a user can observe must be the same: every job's final state,
attemptsMade, failedReason, return value, logs and progress, what removeOn* leaves, the
event-stream entries (names, and which job each is about) and time-based facts reduced to
booleans. A difference in behaviour between the two runtimes fails here.

Both sides add their jobs through the same QueueManager; only the worker differs. The Python
processor (`steered`) does what the harness's does from the same job data (harness.mjs's
header). Return values differ only in their "by" field ("node" / "native"), which `_facts`
drops. Timings are never compared, only facts ("the back-off gap was at least the delay")
read from the Redis times of the stream entries and the jobs' timestamps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from bullmq import Job
from bullmq.custom_errors import UnrecoverableError

from mailqueue.bullmq_fixes import connection_options
from mailqueue.errors import JobNotFoundError
from mailqueue.flows import FlowManager
from mailqueue.runtime import NativeWorker
from mailqueue.settings import Settings
from tests.mailqueue.conftest import Stack, open_stack, wait_for_counts
from tests.node_support import NodeProcess, NodeRunner
from tests.waiting import eventually

JOB_NAMES = ("job", "parent", "child")
TOLERANCE_MS = 5  # stream ids are Redis ms, delays are computed on the workers' clocks


def steered(hang: bool) -> Callable[[Any, Job], Awaitable[Any]]:
    """The harness's processor, in Python, in the same order (harness.mjs's header)."""
    async def process(data: Any, job: Job) -> Any:
        for value in data.get("progress", []):
            await job.updateProgress(value)
        for line in data.get("logs", []):
            await job.log(line)
        if data.get("sleepMs"):
            await asyncio.sleep(data["sleepMs"] / 1000)  # the job's work, as the harness's
        if hang:
            await asyncio.Event().wait()
        if data.get("fail"):
            raise RuntimeError(data["fail"])
        if data.get("unrecoverable"):
            raise UnrecoverableError(data["unrecoverable"])
        attempt = job.attemptsMade + 1
        if data.get("failUntil") and attempt < data["failUntil"]:
            raise RuntimeError(f"attempt {attempt} of {data['failUntil']}")
        if data.get("childrenCount"):
            return len(await job.getChildrenValues())
        return {"by": "native", "name": job.name, "id": job.id, "echo": data}
    return process


class NodeRuntime:
    """Node BullMQ's Worker: one harness process per start."""

    name = "node"

    def __init__(self, node: NodeRunner) -> None:
        self._node = node
        self._procs: dict[str, list[NodeProcess]] = {}

    async def start(self, queue: str, concurrency: int = 1, hang: bool = False,
                    **options: Any) -> None:
        proc = await self._node.start("work", queue=queue, concurrency=concurrency, hang=hang,
                                      options=options, seconds=120)
        await proc.wait_for("ready")
        self._procs.setdefault(queue, []).append(proc)

    async def stop(self, queue: str) -> None:
        for proc in self._procs.pop(queue, []):
            await proc.stop()  # SIGTERM: worker.close()

    async def kill(self, queue: str) -> None:
        for proc in self._procs.pop(queue, []):
            await proc.kill()  # SIGKILL: its active job keeps its lock until it expires


class NativeRuntime:
    """Our native worker, started as the application starts it (WorkerManager)."""

    name = "native"

    def __init__(self, stack: Stack) -> None:
        self._stack = stack

    async def start(self, queue: str, concurrency: int = 1, hang: bool = False,
                    **options: Any) -> None:
        managed = self._stack.workers.start_worker(
            queue, dict.fromkeys(JOB_NAMES, steered(hang)), concurrency=concurrency, **options)
        assert isinstance(managed.worker, NativeWorker)
        # As Node's "ready": the loop runs (connections made).
        await eventually(lambda: managed.worker.running, 5, f"the native worker of {queue} running",
                         interval=0.01)

    async def stop(self, queue: str) -> None:
        await self._stack.workers.stop_worker(queue)

    async def kill(self, queue: str) -> None:
        # Abandons the active job: neither completed nor failed, its lock left to expire.
        await self._stack.workers.stop_worker(queue, timeout=0.1)


Runtime = NodeRuntime | NativeRuntime


@dataclass
class Canary:
    stack: Stack
    node: NodeRuntime
    native: NativeRuntime

    async def compare(self, scenario: Callable[[Runtime], Awaitable[dict[str, Any]]]
                      ) -> dict[str, Any]:
        """Run `scenario` on both runtimes at once; assert the summaries are equal."""
        from_node, from_native = await asyncio.gather(scenario(self.node), scenario(self.native))
        assert from_native == from_node
        return from_node


@pytest.fixture
async def canary(settings: Settings, redis_url: str, node: NodeRunner) -> AsyncIterator[Canary]:
    native_settings = settings.model_copy(update={"worker_runtime": "native"})
    async with open_stack(native_settings, redis_url) as stack:
        yield Canary(stack, NodeRuntime(node), NativeRuntime(stack))


# --- Observing a queue ------------------------------------------------------------------------


async def _add(stack: Stack, queue: str, jobs: list[dict[str, Any]]) -> None:
    """Add jobs in order: each is its data (with a "label") plus an optional "opts"."""
    await stack.queues.add_jobs(queue, [
        {"name": "job", "data": {k: v for k, v in job.items() if k != "opts"},
         "opts": {"attempts": 1, **job.get("opts", {})}} for job in jobs])


async def _entries(stack: Stack, queue: str) -> list[tuple[int, dict[str, str]]]:
    """The queue's event stream: (Redis time in ms, fields) per entry."""
    raw: Any = await stack.client.xrange(f"{stack.prefix}:{queue}:events")
    return [(int(entry_id.split("-")[0]), fields) for entry_id, fields in raw]


async def _labels(stack: Stack, queue: str) -> dict[str, str]:
    """Job id -> the label in its data, for every job the stream mentions (call it before
    removeOn* removes any)."""
    labels: dict[str, str] = {}
    for _, fields in await _entries(stack, queue):
        job_id = fields.get("jobId")
        if job_id and job_id not in labels:
            info = await stack.queues.get_job(queue, job_id, with_state=False)
            labels[job_id] = info["data"]["label"]
    return labels


def _named(fields: dict[str, str], labels: dict[str, str]) -> str:
    """'failed:j1 failedReason=no prev=active': the entry's name, the label of its job (flow
    ids are uuids) and its other fields but those that differ by nature (the "delay"
    timestamp; the return value, which is in the job's facts)."""
    job_id = fields.get("jobId")
    name = f"{fields['event']}:{labels.get(job_id, job_id)}" if job_id else fields["event"]
    return " ".join([name] + [f"{k}={v}" for k, v in sorted(fields.items())
                              if k not in ("event", "jobId", "delay", "returnvalue")])


def _about(entry: str) -> tuple[str, str]:
    """('failed', 'j1') for 'failed:j1 ...'; ('drained', '') for 'drained'."""
    name, _, label = entry.split(" ", 1)[0].partition(":")
    return name, label


async def _facts(stack: Stack, queue: str, job_id: str) -> dict[str, Any] | None:
    try:
        info = await stack.queues.get_job(queue, job_id)
    except JobNotFoundError:
        return None  # removed (removeOnComplete / removeOnFail)
    value = info["return_value"]
    if isinstance(value, dict):  # the harness's shape: "by" differs, the id is the job's
        value = {**{k: v for k, v in value.items() if k != "by"},
                 "id": str(value.get("id")) == info["id"]}
    return {"state": info["state"], "attemptsMade": info["attempts_made"],
            "attemptsStarted": info["attempts_started"],
            "failedReason": info["failed_reason"], "returnvalue": value,
            "stacktraces": len(info["stacktrace"]), "progress": info["progress"],
            "logs": await stack.queues.get_job_logs(queue, job_id)}


async def _observe(stack: Stack, queue: str, labels: dict[str, str]) -> dict[str, Any]:
    entries = await _entries(stack, queue)
    counts = await stack.queues.get_job_counts(queue)
    return {
        "jobs": {label: await _facts(stack, queue, job_id) for job_id, label in labels.items()},
        "counts": {state: n for state, n in counts.items() if n},
        "events": [_named(fields, labels) for _, fields in entries],
    }


def _times(entries: list[tuple[int, dict[str, str]]], event: str, job_id: str | None = None
           ) -> list[int]:
    return [at for at, fields in entries if fields["event"] == event
            and (job_id is None or fields.get("jobId") == job_id)]


# --- Scenarios --------------------------------------------------------------------------------


async def test_retries_back_off_and_unrecoverable_errors(canary: Canary) -> None:
    stack = canary.stack

    async def scenario(rt: Runtime) -> dict[str, Any]:
        queue = f"retry-{rt.name}"
        await _add(stack, queue, [
            {"label": "backoff", "failUntil": 3,
             "opts": {"attempts": 3, "backoff": {"type": "exponential", "delay": 100}}},
            {"label": "unrecoverable", "unrecoverable": "bad address", "opts": {"attempts": 5}},
            {"label": "always", "fail": "451 try later", "opts": {"attempts": 2}}])
        labels = await _labels(stack, queue)
        await rt.start(queue)
        await wait_for_counts(stack, queue, 15, completed=1, failed=2, delayed=0, active=0)
        await rt.stop(queue)
        seen = await _observe(stack, queue, labels)
        # The back-off job's retries interleave with the other jobs by timing: the entries
        # are compared job by job ("drained" depends on that interleaving: left out).
        seen["events"] = {label: [e for e in seen["events"] if _about(e)[1] == label]
                          for label in labels.values()}
        entries = await _entries(stack, queue)
        backoff_id = next(i for i, label in labels.items() if label == "backoff")
        starts = _times(entries, "active", backoff_id)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        seen["backoff_gaps_at_least_delay"] = [
            gap >= delay - TOLERANCE_MS for gap, delay in zip(gaps, (100, 200), strict=False)]
        return seen

    seen = await canary.compare(scenario)
    assert seen["backoff_gaps_at_least_delay"] == [True, True]
    jobs = seen["jobs"]
    assert (jobs["backoff"]["state"], jobs["backoff"]["attemptsMade"]) == ("completed", 3)
    assert jobs["unrecoverable"]["attemptsMade"] == 1
    assert jobs["unrecoverable"]["failedReason"] == "bad address"
    assert (jobs["always"]["state"], jobs["always"]["attemptsMade"]) == ("failed", 2)


@pytest.mark.parametrize("where", ["job", "worker"])
async def test_remove_on_complete_and_fail(canary: Canary, where: str) -> None:
    """removeOnComplete true / removeOnFail 2 in the jobs' options, or as the worker's
    defaults (Node's Worker takes KeepJobs objects there: {count: 0} / {count: 2})."""
    stack = canary.stack
    in_job: dict[str, Any] = {"removeOnComplete": True, "removeOnFail": 2}
    in_worker: dict[str, Any] = {"removeOnComplete": {"count": 0}, "removeOnFail": {"count": 2}}
    in_job, in_worker = (in_job, {}) if where == "job" else ({}, in_worker)

    async def scenario(rt: Runtime) -> dict[str, Any]:
        queue = f"remove-{where}-{rt.name}"
        await _add(stack, queue, [{"label": f"j{i}", **({"fail": "no"} if i % 2 else {}),
                                   "opts": in_job} for i in range(8)])
        labels = await _labels(stack, queue)
        await rt.start(queue, **in_worker)
        await wait_for_counts(stack, queue, 15, waiting=0, active=0)  # all 8 finished
        await rt.stop(queue)
        return await _observe(stack, queue, labels)

    seen = await canary.compare(scenario)
    assert seen["counts"] == {"failed": 2}
    assert [label for label, job in seen["jobs"].items() if job] == ["j5", "j7"]


@pytest.mark.parametrize("concurrency", [1, 5])
async def test_rate_limiter(canary: Canary, concurrency: int) -> None:
    stack = canary.stack
    limit, window_ms = 5, 1000

    async def scenario(rt: Runtime) -> dict[str, Any]:
        queue = f"limited-{concurrency}-{rt.name}"
        await _add(stack, queue, [{"label": f"j{i}"} for i in range(12)])
        labels = await _labels(stack, queue)
        await rt.start(queue, concurrency=concurrency,
                       limiter={"max": limit, "duration": window_ms})
        await wait_for_counts(stack, queue, 15, completed=12, active=0)
        await rt.stop(queue)
        seen = await _observe(stack, queue, labels)
        if concurrency > 1:  # the order of entries (and "drained") depends on the slots
            seen["events"] = Counter(_about(e)[0] for e in seen["events"] if e != "drained")
        # The limiter's window opens with its first job (the key expires `duration` later):
        # windows in the Redis times of the "active" entries, opened the same way.
        windows: list[int] = []
        opened = -window_ms
        for at in sorted(_times(await _entries(stack, queue), "active")):
            if at >= opened + window_ms:
                opened = at
                windows.append(0)
            windows[-1] += 1
        seen["windows"] = {"at_least_3": len(windows) >= 3,
                           "none_over_limit": max(windows) <= limit}
        return seen

    seen = await canary.compare(scenario)
    assert seen["windows"] == {"at_least_3": True, "none_over_limit": True}


async def test_a_delayed_job_is_not_processed_before_its_delay(canary: Canary) -> None:
    stack = canary.stack

    async def scenario(rt: Runtime) -> dict[str, Any]:
        queue = f"later-{rt.name}"
        await rt.start(queue)  # idle first: it must wake for the delayed job
        await _add(stack, queue, [{"label": "later", "opts": {"delay": 300}}])
        labels = await _labels(stack, queue)
        await wait_for_counts(stack, queue, 10, completed=1)
        await rt.stop(queue)
        seen = await _observe(stack, queue, labels)
        info = await stack.queues.get_job(queue, next(iter(labels)))
        entries = await _entries(stack, queue)
        # The delay counts from the job's timestamp (set by the adding client, before its
        # "added" entry: the gap from that entry to "active" may be shorter than 300 ms).
        seen["not_before_delay"] = [
            (info["processed_on"] or 0) - info["timestamp"] >= 300,
            _times(entries, "active")[0] - info["timestamp"] >= 300 - TOLERANCE_MS]
        return seen

    seen = await canary.compare(scenario)
    assert seen["not_before_delay"] == [True, True]


async def test_a_flow_parent_counts_its_childrens_values(canary: Canary, redis_url: str) -> None:
    stack = canary.stack
    flows = FlowManager(connection_options(redis_url), stack.client, stack.prefix, stack.queues)

    async def scenario(rt: Runtime) -> dict[str, Any]:
        queue = f"flow-{rt.name}"
        await flows.add_flow({
            "name": "parent", "queueName": queue,
            "data": {"label": "parent", "childrenCount": True},
            "children": [{"name": "child", "queueName": queue, "data": {"label": f"c{i}"}}
                         for i in range(3)]})
        labels = await _labels(stack, queue)
        await rt.start(queue)
        await wait_for_counts(stack, queue, 15, completed=4)
        await rt.stop(queue)
        return await _observe(stack, queue, labels)

    try:
        seen = await canary.compare(scenario)
    finally:
        await flows.close()
    assert seen["jobs"]["parent"]["returnvalue"] == 3
    assert seen["jobs"]["parent"]["state"] == "completed"


async def test_a_stalled_job_is_recovered_by_a_new_worker(canary: Canary) -> None:
    stack = canary.stack
    options: dict[str, Any] = {"lockDuration": 1000, "stalledInterval": 500}

    async def scenario(rt: Runtime) -> dict[str, Any]:
        queue = f"stall-{rt.name}"
        await rt.start(queue, hang=True, **options)
        await _add(stack, queue, [{"label": "stuck"}])
        labels = await _labels(stack, queue)
        await wait_for_counts(stack, queue, 10, active=1)
        await rt.kill(queue)
        job_id = next(iter(labels))
        assert (await stack.queues.get_job(queue, job_id))["state"] == "active"
        await rt.start(queue, **options)  # a new worker of the same runtime
        await wait_for_counts(stack, queue, 15, completed=1, active=0)
        await rt.stop(queue)
        seen = await _observe(stack, queue, labels)
        seen["stalled_entry"] = ("stalled", "stuck") in map(_about, seen["events"])
        return seen

    seen = await canary.compare(scenario)
    assert seen["stalled_entry"] is True
    assert seen["jobs"]["stuck"]["state"] == "completed"


async def test_progress_and_logs_from_the_processor(canary: Canary) -> None:
    stack = canary.stack

    async def scenario(rt: Runtime) -> dict[str, Any]:
        queue = f"progress-{rt.name}"
        await _add(stack, queue, [{"label": "p", "progress": [10, 50, {"step": "sent"}],
                                   "logs": ["first line", "second line"]}])
        labels = await _labels(stack, queue)
        await rt.start(queue)
        await wait_for_counts(stack, queue, 10, completed=1)
        await rt.stop(queue)
        return await _observe(stack, queue, labels)

    seen = await canary.compare(scenario)
    assert seen["jobs"]["p"]["logs"] == ["first line", "second line"]
    assert seen["jobs"]["p"]["progress"] == {"step": "sent"}
    assert [e for e in seen["events"] if e.startswith("progress:")] == [
        "progress:p data=10", "progress:p data=50", 'progress:p data={"step":"sent"}']
