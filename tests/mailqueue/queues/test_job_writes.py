"""Adding jobs and changing one job (mailqueue/queues/job_writes.py): options merged and
checked before anything is written; retry, promote, remove, new data, a copy."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from mailqueue.errors import InvalidJobOptionsError, JobNotFoundError, MailQueueError
from mailqueue.manager import MailManager
from mailqueue.queues import QueueManager
from tests.mailqueue.queues.conftest import boom, counts_of, has_counts, running_worker, stored_opts
from tests.waiting import eventually


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


async def test_retry_one_failed_job(qm: QueueManager, redis_url: str, prefix: str) -> None:
    job = await qm.add_job("emails", "n", {"n": 7}, {"attempts": 1})
    waiting = await qm.add_job("other", "n", {})
    async with running_worker(redis_url, prefix, "emails", boom):
        await eventually(lambda: has_counts(qm, "emails", failed=1))
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


async def test_duplicate_keeps_name_data_options_but_not_the_id(mail: MailManager) -> None:
    data: dict[str, Any] = {"to": "ada@example.com"}
    await mail.add_job("jv", "send", data, jobId="orig", attempts=4, priority=3)
    copy = await mail.queues.duplicate_job("jv", "orig")
    assert copy.id != "orig"
    view = await mail.queues.get_job_view("jv", str(copy.id))
    assert view["name"] == "send"
    assert view["data"] == data
    assert view["opts"]["attempts"] == 4
    assert view["priority"] == 3
    assert view["opts"].get("jobId") in (None, copy.id)
    with pytest.raises(JobNotFoundError):
        await mail.queues.duplicate_job("jv", "nope")
