"""Manager-layer helpers the dashboard needs: run a schedule now, Redis INFO, recent events."""

from __future__ import annotations

from typing import Any

import pytest

from mailqueue.errors import JobNotFoundError, UnknownQueueError
from mailqueue.manager import MailManager
from tests.waiting import eventually


async def test_run_schedule_now_adds_a_job_from_the_template(mail: MailManager) -> None:
    await mail.schedule_job("emails", "send-digest", {"list": "weekly"}, cron="0 9 * * *",
                            scheduler_id="digest", priority=3)
    job = await mail.run_schedule_now("emails", "digest")
    assert job.name == "send-digest" and job.data == {"list": "weekly"}
    assert job.opts.get("priority") == 3 and not job.opts.get("repeat")
    info = await mail.queues.get_job("emails", str(job.id))
    assert info["state"] == "prioritized"
    second = await mail.run_schedule_now("emails", "digest")
    assert second.id != job.id
    assert [s["id"] for s in await mail.list_schedules("emails")] == ["digest"]
    with pytest.raises(JobNotFoundError):
        await mail.run_schedule_now("emails", "nope")
    with pytest.raises(UnknownQueueError):
        await mail.run_schedule_now("no-such-queue", "digest")


async def test_redis_info(mail: MailManager) -> None:
    info = await mail.redis_info()
    assert isinstance(info["version"], str) and info["version"].count(".") == 2
    assert info["used_memory"] > 0 and info["used_memory_peak"] >= info["used_memory"] // 2
    assert info["connected_clients"] >= 1 and info["uptime_s"] >= 0
    assert info["ops_per_sec"] >= 0 and info["total_commands"] > 0


async def test_dev_sink_url(mail: MailManager) -> None:
    assert await mail.dev_sink_url() is None
    sink = await mail.start_dev_sink()
    assert await mail.dev_sink_url() == sink.url


async def _ok(data: Any, job: Any) -> str:
    return "ok"


async def test_recent_events_newest_first_filtered(mail: MailManager) -> None:
    mail.start_worker("a", {"ok": _ok})
    for i in range(3):
        await mail.add_job("a", "ok", {"i": i})
    await mail.add_job("b", "ok", {})
    await eventually(lambda: mail.queues.get_job_counts("a"), 10, "3 jobs of a completed",
                     accept=lambda counts: counts["completed"] == 3)
    events = await mail.events.recent_events(n=100)
    assert {e["queue"] for e in events} == {"a", "b"}
    keys = [tuple(map(int, e["id"].split("-"))) for e in events]
    assert keys == sorted(keys, reverse=True)
    completed = await mail.events.recent_events(["a"], "completed", 2)
    assert len(completed) == 2 and all(e["event"] == "completed" for e in completed)
    assert completed[0]["returnvalue"] == "ok"
    assert await mail.events.recent_events(["b"], "completed") == []
    assert len(await mail.events.recent_events(n=1)) == 1
    assert await mail.events.recent_events(n=0) == []
