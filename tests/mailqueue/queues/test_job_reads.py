"""Reading jobs for tables (mailqueue/queues/job_reads.py): pages sorted and totalled,
payload-free rows, a bounded search, the newest jobs across states."""

from __future__ import annotations

from typing import Any

import pytest

from mailqueue.errors import MailQueueError, UnknownQueueError
from mailqueue.manager import MailManager
from mailqueue.queues import QueueManager
from mailqueue.settings import Settings
from tests.mailqueue.conftest import open_stack


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


async def test_job_summaries_page_rows_without_payloads(mail: MailManager) -> None:
    await mail.add_jobs("rows", [{"name": f"job-{i}", "data": {"i": i, "blob": "x" * 1000},
                                  "opts": {"attempts": 3}} for i in range(30)])
    page = await mail.queues.get_job_summaries("rows", "waiting", page=2, per_page=10)
    assert page["total"] == 30 and page["counts"]["waiting"] == 30
    assert [job["name"] for job in page["jobs"]] == [f"job-{i}" for i in range(19, 9, -1)]
    first = page["jobs"][0]
    assert "data" not in first and first["attempts"] == 3 and first["state"] == "waiting"
    assert first["timestamp"] > 0 and first["processed_on"] is None

    oldest = await mail.queues.get_job_summaries("rows", "waiting", page=1, per_page=5,
                                                 sort="asc")
    assert [job["name"] for job in oldest["jobs"]] == [f"job-{i}" for i in range(5)]
    past_end = await mail.queues.get_job_summaries("rows", "waiting", page=10_000, per_page=10)
    assert past_end["jobs"] == [] and past_end["total"] == 30


async def test_job_summaries_refuse_bad_arguments(mail: MailManager) -> None:
    await mail.add_job("rows", "one", {})
    with pytest.raises(MailQueueError, match="Unknown state"):
        await mail.queues.get_job_summaries("rows", "nope")
    with pytest.raises(MailQueueError, match="page must be"):
        await mail.queues.get_job_summaries("rows", "waiting", page=0)
    with pytest.raises(UnknownQueueError):
        await mail.queues.get_job_summaries("missing", "waiting")


async def test_search_is_bounded_and_says_how_much_it_read(mail: MailManager) -> None:
    jobs = [{"name": "needle" if i % 10 == 0 else "hay", "data": {"to": f"user{i}@example.com"}}
            for i in range(1500)]
    await mail.add_jobs("search", jobs)
    found = await mail.queues.search_jobs("search", "waiting", "USER1499@", field="data")
    assert found["scanned"] == 1000 and found["total"] == 1500 and found["matched"] == 1
    assert found["jobs"][0]["name"] == "hay"
    # The oldest jobs are beyond the newest 1,000 read: not found, and the answer says so.
    assert (await mail.queues.search_jobs("search", "waiting", "user5@"))["matched"] == 0
    by_name = await mail.queues.search_jobs("search", "waiting", "needle", field="name",
                                            max_results=20)
    assert by_name["matched"] == 100 and len(by_name["jobs"]) == 20


async def test_search_matches_non_ascii_data_written_as_escapes(mail: MailManager) -> None:
    await mail.add_job("search", "hello", {"who": "Zoë"})
    found = await mail.queues.search_jobs("search", "waiting", "zoë")
    assert found["matched"] == 1


async def test_latest_merges_the_newest_of_every_state(settings: Settings, redis_url: str
                                                       ) -> None:
    async with open_stack(settings, redis_url) as stack:
        q = "latest"
        old = await stack.queues.add_jobs(q, [{"name": "old", "data": {}} for _ in range(60)])
        delayed = await stack.queues.add_job(q, "later", {}, {"delay": 600_000})
        prioritized = await stack.queues.add_job(q, "urgent", {}, {"priority": 2})
        newest = await stack.queues.add_job(q, "new", {})
        # Push the hashes' timestamps apart (adds in one millisecond tie).
        for i, job in enumerate([*old, delayed, prioritized, newest]):
            await stack.client.hset(stack.queues.keys(q).job(str(job.id)), "timestamp",
                                    str(1_700_000_000_000 + i))
        rows = await stack.queues.get_latest_jobs(q, 5)
        assert [r["id"] for r in rows] == [str(newest.id), str(prioritized.id),
                                          str(delayed.id), str(old[-1].id), str(old[-2].id)]
        assert [r["state"] for r in rows[:3]] == ["waiting", "prioritized", "delayed"]
        assert len(await stack.queues.get_latest_jobs(q, 50)) == 50
        # Bounded reads, whatever the queue's size: `limit` ids of each state at most.
        handle = await stack.queues.get_queue(q)
        ranges: list[tuple[Any, ...]] = []
        original = handle.backend.getRanges

        async def spy(*args: Any) -> Any:
            ranges.append(args)
            return await original(*args)

        handle.backend.getRanges = spy
        await stack.queues.get_latest_jobs(q, 20)
        assert ranges and all(start == 0 and end == 19 for _, start, end, _ in ranges)
