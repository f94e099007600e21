"""EventManager's reader against a real Redis: per-queue and global listeners, the fields of
each event, queues that appear later, a reader that survives a Redis restart, and its stats."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from mailqueue.bullmq_fixes import connection_options
from mailqueue.errors import MailQueueError
from mailqueue.events import EventManager
from mailqueue.manager import MailManager
from mailqueue.redis_server import EmbeddedRedis
from mailqueue.settings import Settings
from tests.mailqueue.event_support import WorkerFactory, boom, event_ids, ok
from tests.waiting import eventually


async def test_per_queue_and_global_listeners(mail: MailManager) -> None:
    only_a: list[dict[str, Any]] = []
    everything: list[dict[str, Any]] = []
    mail.on_event("a", "added", only_a.append)
    mail.on_event(None, None, everything.append)

    await mail.add_job("a", "send-welcome", {"to": "ada@example.com"})
    await mail.add_job("b", "send-welcome", {"to": "bob@example.com"})
    await eventually(lambda: {e["queue"] for e in everything} >= {"a", "b"})

    assert [(e["queue"], e["event"]) for e in only_a] == [("a", "added")]
    assert ("b", "added") in {(e["queue"], e["event"]) for e in everything}


async def test_unsubscribe_stops_delivery(mail: MailManager) -> None:
    seen: list[dict[str, Any]] = []
    still: list[dict[str, Any]] = []  # a listener that stays: the events did arrive
    off = mail.on_event("q", None, seen.append)
    mail.on_event("q", None, still.append)
    await mail.add_job("q", "x")
    await eventually(lambda: len(seen) >= 2 and len(still) >= 2)  # added + waiting
    off()
    before, still_before = len(seen), len(still)
    await mail.add_job("q", "x")
    await eventually(lambda: len(still) >= still_before + 2, what="the next job's events")
    assert len(seen) == before


async def test_async_listener_runs_and_a_raising_one_stops_nothing(
    mail: MailManager, caplog: pytest.LogCaptureFixture
) -> None:
    awaited: list[str] = []
    plain: list[str] = []

    async def slow(event: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        awaited.append(event["event"])

    def broken(event: dict[str, Any]) -> None:
        raise ValueError("listener bug")

    mail.on_event("q", None, broken)
    mail.on_event("q", "added", slow)
    mail.on_event("q", "added", lambda e: plain.append(e["jobId"]))
    with caplog.at_level(logging.ERROR, logger="mailqueue.events"):
        job = await mail.add_job("q", "x")
        await eventually(lambda: bool(awaited) and bool(plain))
    assert awaited == ["added"]
    assert plain == [job.id]
    assert "listener bug" in caplog.text
    # The reader survived the raising listener.
    await mail.add_job("q", "x")
    await eventually(lambda: len(awaited) == 2)


async def test_event_fields(
    mail: MailManager, worker_factory: WorkerFactory
) -> None:
    seen: list[dict[str, Any]] = []
    mail.on_event("f", None, seen.append)
    good = await mail.add_job("f", "send-welcome", {"to": "ada@example.com"})
    bad = await mail.add_job("f", "send-reset", {"to": "x"}, attempts=1)
    worker_factory("f", lambda job, token: ok(job, token) if job.id == good.id
                   else boom(job, token))
    await eventually(lambda: {e["event"] for e in seen} >= {"completed", "failed"})

    by_type = {(e["event"], e.get("jobId")): e for e in seen}
    added = by_type[("added", good.id)]
    assert added["name"] == "send-welcome" and added["queue"] == "f"
    assert added["id"].count("-") == 1
    completed = by_type[("completed", good.id)]
    assert completed["returnvalue"] == {"sent": "ada@example.com", "n": 1}
    assert completed["prev"] == "active"
    failed = by_type[("failed", bad.id)]
    assert failed["failedReason"] == "smtp down for send-reset"
    ids = [e["id"] for e in seen]
    assert ids == await event_ids(mail.client, mail.settings.queue_prefix, "f", "0-0")


async def test_global_listener_picks_up_a_queue_created_later(mail: MailManager) -> None:
    seen: list[dict[str, Any]] = []
    mail.on_event(None, "added", seen.append)
    await asyncio.sleep(2.5)  # the scenario: the queue appears after the first discovery scan
    job = await mail.add_job("brand-new", "x")
    await eventually(lambda: any(e["queue"] == "brand-new" for e in seen))
    assert seen[0]["jobId"] == job.id


async def test_events_before_the_first_listener_are_not_delivered(mail: MailManager) -> None:
    await mail.add_job("old", "x")
    await asyncio.sleep(0.05)  # the start is the listener's time, less a few ms of margin
    seen: list[dict[str, Any]] = []
    mail.on_event("old", None, seen.append)
    job = await mail.add_job("old", "y")
    await eventually(lambda: len(seen) >= 2)
    assert {e.get("jobId") for e in seen} == {job.id}


async def test_reader_reconnects_after_a_redis_restart(tmp_path: Path, settings: Settings) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "restart").start()
    port = server.port
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    manager = EventManager(connection_options(server.url), client, "rs", settings)
    seen: list[dict[str, Any]] = []
    manager.on_event("q", None, seen.append)
    try:
        await client.xadd("rs:q:events", {"event": "added", "jobId": "1", "name": "x"})
        await eventually(lambda: len(seen) == 1)

        server.kill()
        await eventually(lambda: not manager._connected)
        await asyncio.sleep(1.0)  # the scenario: Redis stays away while the reader retries
        server = EmbeddedRedis(data_dir=tmp_path / "restart", port=port).start()

        after = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            await after.xadd("rs:q:events", {"event": "added", "jobId": "2", "name": "x"})
            await eventually(lambda: len(seen) == 2, timeout=20)
        finally:
            await after.aclose()
        stats = await manager.get_event_stats()
        assert stats["reconnects"] >= 1 and stats["connected"] is True
        assert [e["jobId"] for e in seen] == ["1", "2"]
    finally:
        await manager.close()
        await client.aclose()
        server.stop()


async def test_event_stats(mail: MailManager) -> None:
    seen: list[dict[str, Any]] = []
    mail.on_event(None, None, seen.append)
    await eventually(lambda: mail.events._connected)
    stats = await mail.get_event_stats()
    assert stats["total"] == 0 and stats["connected"] is True
    await mail.add_job("st1", "x")
    await mail.add_job("st2", "x")
    await mail.add_job("st2", "x")
    await eventually(lambda: len(seen) == 6, timeout=10)

    stats = await mail.get_event_stats()
    assert stats["total"] == 6
    assert stats["per_queue"] == {"st1": 2, "st2": 4}
    assert stats["per_type"] == {"added": 3, "waiting": 3}
    assert stats["per_queue_type"]["st2"] == {"added": 2, "waiting": 2}
    assert stats["last_event_id"] == seen[-1]["id"]
    assert abs(stats["last_event_at"] - time.time()) < 10
    assert 0 <= stats["lag_ms"]["last"] <= stats["lag_ms"]["max"] < 5000
    assert set(stats["watched_queues"]) >= {"st1", "st2"}
    assert stats["listeners"] == 1


async def test_a_closed_manager_refuses_listeners(
    settings: Settings, redis_url: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    manager = EventManager(connection_options(redis_url), client, "x", settings)
    await manager.close()
    await client.aclose()
    with pytest.raises(MailQueueError, match="closed"):
        manager.on_event("q", None, print)
