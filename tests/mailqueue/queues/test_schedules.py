"""Job schedulers (mailqueue/queues/schedules.py): cron in a time zone, six fields, every,
listed and removed, bad ones refused, and the preview of the next runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailqueue.errors import InvalidScheduleError
from mailqueue.queues import QueueManager
from mailqueue.queues.schedules import next_runs
from tests.mailqueue.queues.conftest import counts_of


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


def test_next_runs_follow_the_pattern_zone_and_interval() -> None:
    now = int(datetime(2026, 1, 9, 12, 0, tzinfo=UTC).timestamp() * 1000)

    def utc(runs: list[int]) -> list[str]:
        return [datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M") for ms in runs]

    # 9:00 in Paris is 8:00 UTC in winter; weekdays only skip the weekend.
    assert utc(next_runs("0 9 * * 1-5", tz="Europe/Paris", now_ms=now)) == [
        "01-12 08:00", "01-13 08:00", "01-14 08:00", "01-15 08:00", "01-16 08:00"]
    assert utc(next_runs("0 9 * * *", now_ms=now)) == [
        "01-10 09:00", "01-11 09:00", "01-12 09:00", "01-13 09:00", "01-14 09:00"]
    # Six fields: seconds first, as bullmq reads them.
    assert utc(next_runs("0 30 12 * * *", now_ms=now))[0] == "01-09 12:30"
    assert next_runs(every_ms=60_000, now_ms=now + 1) == [now + 60_000 * i
                                                          for i in range(1, 6)]
    for cron, tz, reason in [("61 * * * *", None, "Bad cron pattern '61 * * * *'"),
                             ("* * *", None, "expected 5 fields"),
                             ("0 9 * * *", "Mars/Olympus", "Unknown time zone")]:
        with pytest.raises(InvalidScheduleError, match=reason.replace("*", r"\*")):
            next_runs(cron, tz=tz, now_ms=now)
