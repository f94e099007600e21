"""QueueManager against the suite's real Redis; each test has its own key prefix."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from bullmq import Job, Queue, Worker

from mailqueue.bullmq_fixes import connection_options
from mailqueue.errors import (
    InvalidJobOptionsError,
    InvalidScheduleError,
    JobNotFoundError,
    MailQueueError,
    UnknownQueueError,
)
from mailqueue.queues import QueueManager
from mailqueue.settings import Settings
from mailqueue.types import JOB_STATES
from tests.waiting import eventually

Processor = Callable[[Job, str], Awaitable[Any]]


@pytest.fixture
async def qm(
    settings: Settings, redis_url: str, prefix: str
) -> AsyncIterator[QueueManager]:
    client = aioredis.Redis(decode_responses=True, **connection_options(redis_url))
    manager = QueueManager(
        connection_options(redis_url), client, prefix, settings.default_job_options()
    )
    yield manager
    await manager.close()
    await client.aclose()


@asynccontextmanager
async def running_worker(
    redis_url: str, prefix: str, queue: str, processor: Processor, **opts: Any
) -> AsyncIterator[Worker]:
    worker = Worker(
        queue, processor, {"connection": connection_options(redis_url), "prefix": prefix, **opts}
    )
    try:
        yield worker
    finally:
        await worker.close()


async def ok(job: Job, token: str) -> str:
    return "done"


async def boom(job: Job, token: str) -> None:
    raise RuntimeError(f"boom {job.data.get('n')}")


async def stored_opts(redis_client: aioredis.Redis, prefix: str, queue: str, job_id: str
                      ) -> dict[str, Any]:
    raw = await redis_client.hget(f"{prefix}:{queue}:{job_id}", "opts")
    assert raw is not None, f"job {job_id} not stored"
    opts: dict[str, Any] = json.loads(raw)
    return opts


async def counts_of(qm: QueueManager, queue: str) -> dict[str, int]:
    return {k: v for k, v in (await qm.get_job_counts(queue)).items() if v}


# --- queues ------------------------------------------------------------------------------


async def test_create_queue_is_idempotent_and_an_empty_queue_is_discoverable(
    qm: QueueManager, settings: Settings, redis_url: str, prefix: str
) -> None:
    await qm.create_queue("emails")
    await qm.create_queue("emails")
    assert await qm.list_queues(refresh=True) == ["emails"]
    assert await qm.get_job_counts("emails") == dict.fromkeys(JOB_STATES, 0)

    # Another process (a fresh manager) sees the empty queue too.
    client = aioredis.Redis(decode_responses=True, **connection_options(redis_url))
    other = QueueManager(connection_options(redis_url), client, prefix)
    try:
        assert await other.list_queues() == ["emails"]
        assert await other.queue_exists("emails")
        await other.get_queue("emails")
    finally:
        await other.close()
        await client.aclose()


async def test_list_queues_finds_raw_bullmq_queues_and_ignores_job_keys(
    qm: QueueManager, redis_url: str, prefix: str, redis_client: aioredis.Redis
) -> None:
    raw = Queue("made-elsewhere", {"connection": connection_options(redis_url), "prefix": prefix})
    try:
        for i in range(3):
            job = await raw.add("job", {"i": i}, {"jobId": f"custom-{i}"})
            await Job.addJobLog(raw, str(job.id), "a log line")
        await raw.add("later", {}, {"delay": 60_000})
    finally:
        await raw.close()
    await qm.create_queue("emails")
    # Keys that are not queues: another prefix, a bare key under ours.
    await redis_client.hset(f"other{prefix}:elsewhere:meta", "x", "1")
    await redis_client.set(f"{prefix}:stray", "1")
    try:
        assert await qm.list_queues(refresh=True) == ["emails", "made-elsewhere"]
    finally:
        await redis_client.delete(f"other{prefix}:elsewhere:meta")


async def test_list_queues_does_not_invent_queues_from_lookups(qm: QueueManager) -> None:
    await qm.create_queue("real")
    with pytest.raises(UnknownQueueError):
        await qm.get_job_counts("ghost")
    with pytest.raises(UnknownQueueError):
        await qm.get_jobs("ghost")
    assert await qm.list_queues(refresh=True) == ["real"]


async def test_unknown_queue_is_a_clear_error(qm: QueueManager, prefix: str) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: qm.get_queue("nope"),
        lambda: qm.get_job("nope", "1"),
        lambda: qm.get_jobs("nope", "waiting"),
        lambda: qm.get_job_counts("nope"),
        lambda: qm.pause("nope"),
        lambda: qm.resume("nope"),
        lambda: qm.is_paused("nope"),
        lambda: qm.clean("nope", "completed"),
        lambda: qm.drain("nope"),
        lambda: qm.obliterate("nope"),
        lambda: qm.retry_failed("nope"),
        lambda: qm.promote_delayed("nope"),
        lambda: qm.get_metrics("nope"),
        lambda: qm.list_schedules("nope"),
        lambda: qm.remove_schedule("nope", "x"),
    ]
    for call in calls:
        with pytest.raises(UnknownQueueError, match=rf"'nope'.*{prefix}"):
            await call()


@pytest.mark.parametrize("name", ["", " emails", "emails ", "a:b", "x" * 201, None, 42])
async def test_bad_queue_names_are_refused(qm: QueueManager, name: Any) -> None:
    with pytest.raises(MailQueueError, match="Bad queue name"):
        await qm.create_queue(name)
    with pytest.raises(MailQueueError, match="Bad queue name"):
        await qm.add_job(name, "job", {})
    assert await qm.list_queues(refresh=True) == []


# --- adding jobs -------------------------------------------------------------------------


async def test_add_job_merges_default_options_under_per_call_ones(
    qm: QueueManager, prefix: str, redis_client: aioredis.Redis
) -> None:
    plain = await qm.add_job("emails", "send-welcome", {"to": "ada@example.com"})
    opts = await stored_opts(redis_client, prefix, "emails", str(plain.id))
    assert opts["attempts"] == 3
    assert opts["backoff"] == {"type": "exponential", "delay": 100}
    assert opts["removeOnComplete"] == 1000
    assert opts["removeOnFail"] == 5000
    stored = await redis_client.hget(f"{prefix}:emails:{plain.id}", "data")
    assert json.loads(stored or "null") == {"to": "ada@example.com"}

    custom = await qm.add_job(
        "emails", "send-welcome", {}, {"attempts": 7, "backoff": {"type": "fixed", "delay": 5}}
    )
    opts = await stored_opts(redis_client, prefix, "emails", str(custom.id))
    assert opts["attempts"] == 7
    assert opts["backoff"] == {"type": "fixed", "delay": 5}
    assert opts["removeOnComplete"] == 1000


async def test_queue_defaults_from_create_queue_sit_between_settings_and_call(
    qm: QueueManager, prefix: str, redis_client: aioredis.Redis
) -> None:
    await qm.create_queue("news", attempts=9, removeOnComplete=10)
    job = await qm.add_job("news", "send-newsletter", {}, {"removeOnComplete": 2})
    opts = await stored_opts(redis_client, prefix, "news", str(job.id))
    assert opts["attempts"] == 9
    assert opts["removeOnComplete"] == 2
    assert opts["removeOnFail"] == 5000
    [bulk] = await qm.add_jobs("news", [{"name": "send-newsletter", "data": {}}])
    assert (await stored_opts(redis_client, prefix, "news", str(bulk.id)))["attempts"] == 9


async def test_add_jobs_adds_all_in_one_go(
    qm: QueueManager, prefix: str, redis_client: aioredis.Redis
) -> None:
    jobs = await qm.add_jobs(
        "emails",
        [
            {"name": "send-welcome", "data": {"n": 1}},
            {"name": "send-welcome", "data": {"n": 2}, "opts": {"attempts": 1}},
            {"name": "send-notification", "data": [1, 2], "opts": {"delay": 60_000}},
            {"name": "send-notification", "data": 0},
        ],
    )
    assert len({str(j.id) for j in jobs}) == 4
    assert await counts_of(qm, "emails") == {"waiting": 3, "delayed": 1}
    first, second, third, fourth = (str(j.id) for j in jobs)
    assert (await stored_opts(redis_client, prefix, "emails", first))["attempts"] == 3
    assert (await stored_opts(redis_client, prefix, "emails", second))["attempts"] == 1
    assert (await qm.get_job("emails", third))["data"] == [1, 2]
    assert (await qm.get_job("emails", fourth))["data"] == 0
    assert await qm.add_jobs("emails", []) == []


async def test_add_jobs_names_the_bad_item_and_adds_nothing(qm: QueueManager) -> None:
    await qm.create_queue("emails")
    good = {"name": "ok", "data": {}}
    with pytest.raises(InvalidJobOptionsError, match=r"jobs\[1\].*attempts"):
        await qm.add_jobs("emails", [good, {"name": "x", "opts": {"attempts": 0}}])
    with pytest.raises(InvalidJobOptionsError, match=r"jobs\[0\].*name"):
        await qm.add_jobs("emails", [{"data": {}}])
    with pytest.raises(InvalidJobOptionsError, match=r"jobs\[0\].*name"):
        await qm.add_jobs("emails", [{"name": " "}])
    with pytest.raises(InvalidJobOptionsError, match=r"jobs\[1\].*JSON"):
        await qm.add_jobs("emails", [good, {"name": "x", "data": {"when": object()}}])
    with pytest.raises(InvalidJobOptionsError, match=r"jobs\[0\].*options"):
        await qm.add_jobs("emails", [{"name": "x", "options": {"attempts": 2}}])
    assert await counts_of(qm, "emails") == {}


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"attempt": 3}, "Unknown job option.*attempt"),
        ({"attempts": 0}, "attempts must be an integer >= 1"),
        ({"delay": -1}, "delay must be an integer >= 0"),
        ({"backoff": {"type": "linear", "delay": 10}}, "backoff.type"),
        ({"backoff": -5}, "backoff must be >= 0"),
        ({"backoff": "fast"}, "backoff must be"),
        ({"jobId": 123}, "jobId must be a non-empty string"),
        ({"jobId": "123"}, "cannot be an integer"),
        ({"priority": -1}, "priority must be an integer >= 0"),
        ({"removeOnComplete": -1}, "removeOnComplete"),
    ],
)
async def test_bad_job_options_are_refused_before_anything_is_stored(
    qm: QueueManager, opts: dict[str, Any], message: str
) -> None:
    await qm.create_queue("emails")
    with pytest.raises(InvalidJobOptionsError, match=message):
        await qm.add_job("emails", "send-welcome", {}, opts)
    assert await counts_of(qm, "emails") == {}


async def test_non_json_data_and_empty_names_are_refused(qm: QueueManager) -> None:
    await qm.create_queue("emails")
    with pytest.raises(InvalidJobOptionsError, match="JSON"):
        await qm.add_job("emails", "x", {"at": datetime.now()})
    with pytest.raises(InvalidJobOptionsError, match="JSON"):
        await qm.add_job("emails", "x", {"ratio": float("nan")})
    with pytest.raises(InvalidJobOptionsError, match="name"):
        await qm.add_job("emails", "", {})
    assert await counts_of(qm, "emails") == {}


# --- reading jobs ------------------------------------------------------------------------


async def test_get_job_returns_what_was_added(qm: QueueManager) -> None:
    job = await qm.add_job("emails", "send-welcome", {"to": "ada@example.com"}, {"priority": 3})
    info = await qm.get_job("emails", str(job.id))
    assert info["id"] == str(job.id)
    assert info["queue"] == "emails"
    assert info["name"] == "send-welcome"
    assert info["data"] == {"to": "ada@example.com"}
    assert info["priority"] == 3
    assert info["state"] == "prioritized"
    assert info["attempts_made"] == 0
    assert info["timestamp"] > 0
    with pytest.raises(JobNotFoundError, match=r"'999'.*'emails'"):
        await qm.get_job("emails", "999")


async def test_get_jobs_paginates_sorts_and_totals(qm: QueueManager) -> None:
    ids = [str(j.id) for j in await qm.add_jobs(
        "emails", [{"name": "n", "data": {"i": i}} for i in range(7)]
    )]
    page1 = await qm.get_jobs("emails", "waiting", page=1, per_page=3)
    assert page1["total"] == 7
    assert [j["id"] for j in page1["jobs"]] == ids[::-1][:3]
    assert all(j["state"] == "waiting" for j in page1["jobs"])
    page3 = await qm.get_jobs("emails", "waiting", page=3, per_page=3)
    assert [j["id"] for j in page3["jobs"]] == [ids[0]]
    asc = await qm.get_jobs("emails", "waiting", page=1, per_page=3, sort="asc")
    assert [j["id"] for j in asc["jobs"]] == ids[:3]
    beyond = await qm.get_jobs("emails", "waiting", page=4, per_page=3)
    assert beyond["jobs"] == [] and beyond["total"] == 7

    delayed = await qm.add_job("emails", "later", {}, {"delay": 60_000})
    page = await qm.get_jobs("emails", "delayed")
    assert [j["id"] for j in page["jobs"]] == [str(delayed.id)]
    assert page["total"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": "done"}, "Unknown state 'done'"),
        ({"sort": "up"}, "sort must be"),
        ({"page": 0}, "page must be"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": 10_000}, "per_page"),
    ],
)
async def test_get_jobs_refuses_bad_arguments(
    qm: QueueManager, kwargs: dict[str, Any], message: str
) -> None:
    await qm.create_queue("emails")
    with pytest.raises(MailQueueError, match=message):
        await qm.get_jobs("emails", **kwargs)


async def test_job_counts_cover_every_state(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.add_jobs("work", [{"name": "ok", "data": {}}, {"name": "ok", "data": {}}])
    await qm.add_job("work", "bad", {"n": 1}, {"attempts": 1})

    async def route(job: Job, token: str) -> Any:
        return await (boom if job.name == "bad" else ok)(job, token)

    async with running_worker(redis_url, prefix, "work", route):
        await eventually(
            lambda: _has_counts(qm, "work", completed=2, failed=1)
        )
    await qm.add_job("work", "w", {})
    await qm.add_job("work", "d", {}, {"delay": 60_000})
    await qm.add_job("work", "p", {}, {"priority": 5})
    counts = await qm.get_job_counts("work")
    assert set(counts) == set(JOB_STATES)
    assert {k: v for k, v in counts.items() if v} == {
        "completed": 2, "failed": 1, "waiting": 1, "delayed": 1, "prioritized": 1,
    }


async def _has_counts(qm: QueueManager, queue: str, **expected: int) -> bool:
    counts = await qm.get_job_counts(queue)
    return all(counts[k] == v for k, v in expected.items())


async def test_a_paused_queue_counts_and_lists_its_jobs_as_paused(qm: QueueManager) -> None:
    await qm.add_job("emails", "before", {})
    await qm.pause("emails")
    assert await qm.is_paused("emails")
    added = [await qm.add_job("emails", "during", {"i": i}) for i in range(2)]
    assert await counts_of(qm, "emails") == {"paused": 3}
    page = await qm.get_jobs("emails", "paused")
    assert page["total"] == 3
    assert {str(a.id) for a in added} <= {j["id"] for j in page["jobs"]}
    assert (await qm.get_jobs("emails", "waiting"))["total"] == 0
    assert (await qm.get_job("emails", str(added[0].id)))["state"] == "paused"

    await qm.resume("emails")
    assert not await qm.is_paused("emails")
    assert await counts_of(qm, "emails") == {"waiting": 3}
    assert (await qm.get_job("emails", str(added[0].id)))["state"] == "waiting"


async def test_a_paused_queue_processes_nothing_until_resumed(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.create_queue("emails")
    await qm.pause("emails")
    await qm.add_job("emails", "n", {})
    async with running_worker(redis_url, prefix, "emails", ok):
        # The window in which nothing may run: a worker takes an unpaused job within ms.
        await asyncio.sleep(0.3)
        assert await counts_of(qm, "emails") == {"paused": 1}
        await qm.resume("emails")
        await eventually(lambda: _has_counts(qm, "emails", completed=1))


# --- queue-wide operations ---------------------------------------------------------------


async def test_clean_removes_only_jobs_older_than_the_grace(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    async with running_worker(redis_url, prefix, "emails", ok):
        await eventually(lambda: _has_counts(qm, "emails", completed=3))
    assert await qm.clean("emails", "completed", grace_ms=60_000) == []
    assert await counts_of(qm, "emails") == {"completed": 3}
    await asyncio.sleep(0.01)  # the jobs must be older than now - 0 ms: a clock tick
    removed = await qm.clean("emails", "completed", grace_ms=0)
    assert len(removed) == 3
    assert await counts_of(qm, "emails") == {}

    waiting = await qm.add_job("emails", "n", {})
    await asyncio.sleep(0.01)
    assert await qm.clean("emails", "waiting") == [str(waiting.id)]
    with pytest.raises(MailQueueError, match="Cannot clean state 'nonsense'"):
        await qm.clean("emails", "nonsense")
    with pytest.raises(MailQueueError, match=">= 0"):
        await qm.clean("emails", "completed", grace_ms=-1)


async def test_clean_with_a_limit_removes_at_most_that_many(qm: QueueManager) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(5)])
    await asyncio.sleep(0.01)
    assert len(await qm.clean("emails", "waiting", limit=2)) == 2
    assert await counts_of(qm, "emails") == {"waiting": 3}


async def test_clean_of_a_paused_queue_cleans_what_it_lists_as_paused(qm: QueueManager) -> None:
    await qm.create_queue("emails")
    await qm.pause("emails")
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(2)])
    await asyncio.sleep(0.01)
    assert await qm.clean("emails", "waiting") == []
    assert len(await qm.clean("emails", "paused")) == 2
    assert await counts_of(qm, "emails") == {}


async def test_drain_keeps_delayed_jobs_unless_asked(qm: QueueManager) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    await qm.add_job("emails", "later", {}, {"delay": 60_000})
    await qm.add_job("emails", "urgent", {}, {"priority": 1})
    await qm.drain("emails")
    assert await counts_of(qm, "emails") == {"delayed": 1}
    await qm.drain("emails", include_delayed=True)
    assert await counts_of(qm, "emails") == {}
    assert "emails" in await qm.list_queues(refresh=True)


async def test_obliterate_removes_every_trace_of_the_queue(
    qm: QueueManager, prefix: str, redis_client: aioredis.Redis
) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    await qm.add_job("emails", "later", {}, {"delay": 60_000})
    await qm.create_queue("keep")
    await qm.obliterate("emails")
    assert await qm.list_queues(refresh=True) == ["keep"]
    assert [k async for k in redis_client.scan_iter(match=f"{prefix}:emails:*")] == []
    with pytest.raises(UnknownQueueError):
        await qm.get_job_counts("emails")
    # The queue can be made again afterwards.
    await qm.add_job("emails", "n", {})
    assert await counts_of(qm, "emails") == {"waiting": 1}


async def test_obliterate_with_an_active_job_needs_force(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(job: Job, token: str) -> str:
        started.set()
        await release.wait()
        return "ok"

    await qm.add_job("emails", "n", {})
    async with running_worker(redis_url, prefix, "emails", slow):
        await asyncio.wait_for(started.wait(), 10)
        with pytest.raises(MailQueueError, match=r"Cannot obliterate 'emails'.*active.*force"):
            await qm.obliterate("emails")
        assert "emails" in await qm.list_queues(refresh=True)
        assert (await qm.get_job_counts("emails"))["active"] == 1
        assert not await qm.is_paused("emails"), "a refused obliterate left the queue paused"
        await qm.obliterate("emails", force=True)
        assert await qm.list_queues(refresh=True) == []
        release.set()


async def test_retry_failed_moves_every_failed_job_back(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    await qm.add_jobs(
        "emails", [{"name": "n", "data": {"n": i}, "opts": {"attempts": 1}} for i in range(3)]
    )
    async with running_worker(redis_url, prefix, "emails", boom):
        await eventually(lambda: _has_counts(qm, "emails", failed=3))
    failed = await qm.get_jobs("emails", "failed")
    assert {j["failed_reason"] for j in failed["jobs"]} == {"boom 0", "boom 1", "boom 2"}
    assert await qm.retry_failed("emails") == 3
    assert await counts_of(qm, "emails") == {"waiting": 3}
    assert await qm.retry_failed("emails") == 0


async def test_retry_failed_handles_more_than_one_batch(
    qm: QueueManager, redis_url: str, prefix: str
) -> None:
    # bullmq retries failed jobs 1,000 at a time; all of them must come back.
    await qm.add_jobs(
        "emails", [{"name": "n", "data": {"n": i}, "opts": {"attempts": 1}} for i in range(1200)]
    )
    async with running_worker(redis_url, prefix, "emails", boom, concurrency=50):
        await eventually(lambda: _has_counts(qm, "emails", failed=1200), timeout=60)
    assert await qm.retry_failed("emails") == 1200
    assert await counts_of(qm, "emails") == {"waiting": 1200}


async def test_promote_delayed_makes_every_delayed_job_wait(qm: QueueManager) -> None:
    await qm.add_jobs(
        "emails", [{"name": "n", "data": {}, "opts": {"delay": 60_000}} for _ in range(2)]
    )
    await qm.add_job("emails", "now", {})
    assert await qm.promote_delayed("emails") == 2
    assert await counts_of(qm, "emails") == {"waiting": 3}


async def test_retry_one_failed_job(qm: QueueManager, redis_url: str, prefix: str) -> None:
    job = await qm.add_job("emails", "n", {"n": 7}, {"attempts": 1})
    waiting = await qm.add_job("other", "n", {})
    async with running_worker(redis_url, prefix, "emails", boom):
        await eventually(lambda: _has_counts(qm, "emails", failed=1))
    info = await qm.get_job("emails", str(job.id))
    assert info["state"] == "failed" and info["failed_reason"] == "boom 7"
    await qm.retry_job("emails", str(job.id))
    assert (await qm.get_job("emails", str(job.id)))["state"] == "waiting"
    with pytest.raises(MailQueueError, match="only failed or completed"):
        await qm.retry_job("other", str(waiting.id))
    with pytest.raises(JobNotFoundError):
        await qm.retry_job("emails", "404")


async def test_promote_one_delayed_job(qm: QueueManager) -> None:
    job = await qm.add_job("emails", "later", {}, {"delay": 60_000})
    now = await qm.add_job("emails", "now", {})
    await qm.promote_job("emails", str(job.id))
    assert (await qm.get_job("emails", str(job.id)))["state"] == "waiting"
    with pytest.raises(MailQueueError, match=f"Cannot promote job '{now.id}'"):
        await qm.promote_job("emails", str(now.id))


async def test_remove_job(qm: QueueManager) -> None:
    job = await qm.add_job("emails", "n", {})
    await qm.remove_job("emails", str(job.id))
    with pytest.raises(JobNotFoundError):
        await qm.get_job("emails", str(job.id))
    assert await counts_of(qm, "emails") == {}
    with pytest.raises(JobNotFoundError):
        await qm.remove_job("emails", str(job.id))


async def test_update_job_data(qm: QueueManager, prefix: str,
                               redis_client: aioredis.Redis) -> None:
    job = await qm.add_job("emails", "n", {"to": "old@example.com"})
    await qm.update_job_data("emails", str(job.id), {"to": "new@example.com"})
    assert (await qm.get_job("emails", str(job.id)))["data"] == {"to": "new@example.com"}
    with pytest.raises(InvalidJobOptionsError, match="JSON"):
        await qm.update_job_data("emails", str(job.id), {"x": {1, 2}})
    with pytest.raises(JobNotFoundError):
        await qm.update_job_data("emails", "404", {})
    raw = await redis_client.hget(f"{prefix}:emails:{job.id}", "data")
    assert json.loads(raw or "null") == {"to": "new@example.com"}


async def test_job_logs(qm: QueueManager) -> None:
    job = await qm.add_job("emails", "n", {})
    assert job.id is not None
    await Job.addJobLog(qm.handles.handle("emails"), str(job.id), "first")
    await Job.addJobLog(qm.handles.handle("emails"), str(job.id), "second")
    assert await qm.get_job_logs("emails", str(job.id)) == ["first", "second"]


# --- schedules ---------------------------------------------------------------------------


async def test_schedule_with_a_five_field_cron_in_a_time_zone(qm: QueueManager) -> None:
    schedule = await qm.schedule_job(
        "emails", "send-digest", {"kind": "daily"}, cron="0 9 * * *", tz="Asia/Tokyo"
    )
    assert schedule["id"] == "send-digest"
    assert schedule["name"] == "send-digest"
    assert schedule["cron"] == "0 9 * * *"
    assert schedule["tz"] == "Asia/Tokyo"
    assert schedule["next_run"] is not None
    next_run = datetime.fromtimestamp(schedule["next_run"] / 1000, ZoneInfo("Asia/Tokyo"))
    assert (next_run.hour, next_run.minute, next_run.second) == (9, 0, 0)
    assert 0 < schedule["next_run"] - time.time() * 1000 <= 24 * 3600 * 1000
    assert schedule["template"]["data"] == {"kind": "daily"}
    # The next iteration waits as a delayed job.
    assert await counts_of(qm, "emails") == {"delayed": 1}


async def test_schedule_with_a_six_field_cron_has_seconds_first(qm: QueueManager) -> None:
    schedule = await qm.schedule_job("emails", "tick", {}, cron="59 59 23 * * *")
    assert schedule["cron"] == "59 59 23 * * *"
    assert schedule["next_run"] is not None
    at = datetime.fromtimestamp(schedule["next_run"] / 1000, ZoneInfo("UTC"))
    assert (at.hour, at.minute, at.second) == (23, 59, 59)


async def test_schedule_every_and_list_and_remove(qm: QueueManager) -> None:
    every = await qm.schedule_job("emails", "poll", {"a": 1}, every_ms=60_000,
                                  scheduler_id="poll-inbox", limit=10)
    assert every["id"] == "poll-inbox"
    assert every["name"] == "poll"
    assert every["every_ms"] == 60_000
    assert every["cron"] is None
    assert every["limit"] == 10
    await qm.schedule_job("reports", "weekly", {}, cron="0 8 * * 1")

    assert [s["id"] for s in await qm.list_schedules("emails")] == ["poll-inbox"]
    assert sorted((s["queue"], s["id"]) for s in await qm.list_schedules()) == [
        ("emails", "poll-inbox"), ("reports", "weekly"),
    ]
    # Upserting the same id replaces, never duplicates.
    await qm.schedule_job("emails", "poll", {"a": 2}, every_ms=30_000, scheduler_id="poll-inbox")
    [again] = await qm.list_schedules("emails")
    assert again["every_ms"] == 30_000 and again["template"]["data"] == {"a": 2}

    assert await qm.remove_schedule("emails", "poll-inbox") is True
    assert await qm.remove_schedule("emails", "poll-inbox") is False
    assert await qm.list_schedules("emails") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "not a cron"}, "Bad cron pattern"),
        ({"cron": "61 * * * *"}, "Bad cron pattern"),
        ({"cron": "* * * *"}, "expected 5 fields"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "Unknown time zone"),
        ({"cron": "0 9 * * *", "every_ms": 1000}, "exactly one of cron"),
        ({}, "exactly one of cron"),
        ({"every_ms": 0}, "every must be a positive"),
        ({"every_ms": 1.5}, "every must be a positive"),
        ({"every_ms": 1000, "limit": 0}, "limit"),
    ],
)
async def test_bad_schedules_are_refused(
    qm: QueueManager, kwargs: dict[str, Any], message: str
) -> None:
    await qm.create_queue("emails")
    with pytest.raises(InvalidScheduleError, match=message):
        await qm.schedule_job("emails", "x", {}, **kwargs)
    assert await qm.list_schedules("emails") == []
    assert await counts_of(qm, "emails") == {}


# --- metrics -----------------------------------------------------------------------------


async def test_metrics_are_read_from_what_a_worker_writes(
    qm: QueueManager, redis_url: str, prefix: str, redis_client: aioredis.Redis
) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(3)])
    await qm.add_jobs(
        "emails", [{"name": "bad", "data": {"n": i}, "opts": {"attempts": 1}} for i in range(2)]
    )

    async def route(job: Job, token: str) -> Any:
        return await (boom if job.name == "bad" else ok)(job, token)

    metrics = {"maxDataPoints": 60}
    async with running_worker(redis_url, prefix, "emails", route, metrics=metrics):
        await eventually(lambda: _has_counts(qm, "emails", completed=3, failed=2))
    completed = await qm.get_metrics("emails", "completed")
    assert completed["count"] == 3
    failed = await qm.get_metrics("emails", "failed")
    assert failed["count"] == 2
    assert completed["per_minute"] == [] and completed["points"] == 0

    # Data points are written when a minute boundary passes: pretend the last one was
    # three minutes ago, and the next completion closes those minutes.
    key = f"{prefix}:emails:metrics:completed"
    await redis_client.hset(key, "prevTS", int(time.time() * 1000) - 180_000)
    await qm.add_job("emails", "n", {})
    async with running_worker(redis_url, prefix, "emails", route, metrics=metrics):
        await eventually(lambda: _has_counts(qm, "emails", completed=4))
    completed = await qm.get_metrics("emails", "completed")
    assert completed["count"] == 4
    assert completed["points"] == len(completed["per_minute"]) == 3
    assert sum(completed["per_minute"]) == 3
    assert (await qm.get_metrics("emails", "completed", points=1))["per_minute"] == [0]
    with pytest.raises(MailQueueError, match="kind must be"):
        await qm.get_metrics("emails", "stalled")


async def test_all_queue_metrics(qm: QueueManager, redis_url: str, prefix: str) -> None:
    await qm.add_jobs("emails", [{"name": "n", "data": {}} for _ in range(2)])
    await qm.add_job("reports", "n", {})
    await qm.pause("reports")
    await qm.create_queue("empty")
    async with running_worker(redis_url, prefix, "emails", ok, metrics={"maxDataPoints": 60}):
        await eventually(lambda: _has_counts(qm, "emails", completed=2))
    metrics = await qm.get_all_queue_metrics()
    assert sorted(metrics) == ["emails", "empty", "reports"]
    assert metrics["emails"]["counts"]["completed"] == 2
    assert metrics["emails"]["completed"]["count"] == 2
    assert metrics["emails"]["paused"] is False
    assert metrics["reports"]["paused"] is True
    assert metrics["reports"]["counts"]["paused"] == 1
    assert metrics["empty"]["counts"] == dict.fromkeys(JOB_STATES, 0)
    assert metrics["empty"]["failed"]["count"] == 0
