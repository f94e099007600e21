"""The QueueManager reads the dashboard needs: payload-free job rows, bounded search, counts."""

from __future__ import annotations

import pytest

from mailqueue.errors import MailQueueError, UnknownQueueError
from mailqueue.manager import MailManager


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


async def test_many_job_counts(mail: MailManager) -> None:
    await mail.add_job("a", "x", {})
    await mail.add_job("b", "x", {})
    await mail.add_job("b", "y", {}, delay=60_000)
    await mail.queues.pause("b")
    counts = await mail.queues.get_many_job_counts(["a", "b"])
    assert counts["a"]["counts"]["waiting"] == 1 and counts["a"]["paused"] is False
    assert counts["b"]["counts"]["delayed"] == 1 and counts["b"]["paused"] is True
