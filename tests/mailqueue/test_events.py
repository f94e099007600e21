"""EventManager against a real Redis: listeners, subscriptions, restarts, audit, alerts, stats."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Job, Worker

from mailqueue.bullmq_fixes import connection_options
from mailqueue.errors import MailQueueError
from mailqueue.events import EventManager, Subscription
from mailqueue.events import streams as events_streams
from mailqueue.events import subscriptions as events_subscriptions
from mailqueue.manager import MailManager
from mailqueue.redis_server import EmbeddedRedis
from mailqueue.settings import Settings
from tests.waiting import eventually

Processor = Callable[[Job, str], Awaitable[Any]]


async def take(sub: Subscription, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in sub:
            got.append(event)
            if len(got) == n:
                return

    await asyncio.wait_for(collect(), timeout)
    return got


@pytest.fixture
async def worker_factory(
    redis_url: str, prefix: str
) -> AsyncIterator[Callable[[str, Processor], Worker]]:
    workers: list[Worker] = []

    def start(queue: str, processor: Processor) -> Worker:
        worker = Worker(queue, processor, {"connection": connection_options(redis_url),
                                           "prefix": prefix})
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.close()


async def ok(job: Job, token: str) -> Any:
    return {"sent": job.data.get("to"), "n": 1}


async def boom(job: Job, token: str) -> Any:
    raise RuntimeError(f"smtp down for {job.name}")


async def _xrange_ids(client: aioredis.Redis, prefix: str, queue: str, after: str) -> list[str]:
    entries: Any = await client.xrange(f"{prefix}:{queue}:events", f"({after}", "+")
    return [str(entry_id) for entry_id, _ in entries]


# --- listeners -----------------------------------------------------------------------------


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
    mail: MailManager, worker_factory: Callable[[str, Processor], Worker]
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
    assert ids == await _xrange_ids(mail.client, mail.settings.queue_prefix, "f", "0-0")


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


# --- subscriptions -------------------------------------------------------------------------


async def test_subscribe_yields_events_with_cursors(mail: MailManager) -> None:
    sub = mail.events.subscribe(["s"])
    await mail.add_job("s", "x")
    got = await take(sub, 2)
    await sub.aclose()
    assert [e["event"] for e in got] == ["added", "waiting"]
    assert all(e["cursor"].startswith("c1.") for e in got)


async def test_subscribe_resume_from_a_cursor_misses_nothing(mail: MailManager) -> None:
    prefix = mail.settings.queue_prefix
    first = mail.events.subscribe()  # all queues
    for i in range(3):
        await mail.add_job("r1", "x", {"i": i})
        await mail.add_job("r2", "x", {"i": i})
    got = await take(first, 5)
    cursor = got[-1]["cursor"]
    await first.aclose()
    for i in range(3):  # while nobody listens, and on a third queue too
        await mail.add_job("r2", "x", {"i": i})
        await mail.add_job("r3", "x", {"i": i})

    expected: set[tuple[str, str]] = set()
    last_seen = {q: max((e["id"] for e in got if e["queue"] == q),
                        key=events_streams.id_key, default=None) for q in ("r1", "r2", "r3")}
    floor = str(min(int(e["id"].split("-")[0]) for e in got) - 1000)
    for queue, seen in last_seen.items():
        after = seen or f"{floor}-0"
        expected |= {(queue, i) for i in await _xrange_ids(mail.client, prefix, queue, after)}
    assert expected

    resumed = mail.events.subscribe(last_id=cursor)
    replayed = await take(resumed, len(expected))
    await mail.add_job("r1", "x", {"live": True})
    live = await take(resumed, 2)  # added + waiting, now live
    await resumed.aclose()

    pairs = [(e["queue"], e["id"]) for e in replayed]
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == expected
    assert not {(e["queue"], e["id"]) for e in got} & set(pairs)
    assert [e["event"] for e in live] == ["added", "waiting"]


async def test_subscribe_from_a_plain_stream_id(mail: MailManager) -> None:
    prefix = mail.settings.queue_prefix
    for i in range(3):
        await mail.add_job("p", "x", {"i": i})
    ids = await _xrange_ids(mail.client, prefix, "p", "0-0")
    sub = mail.events.subscribe(["p"], last_id=ids[1])
    got = await take(sub, len(ids) - 2)
    await sub.aclose()
    assert [e["id"] for e in got] == ids[2:]


async def test_slow_subscriber_catches_up_without_loss(
    mail: MailManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_subscriptions, "SUBSCRIBER_BUFFER", 5)
    prefix = mail.settings.queue_prefix
    sub = mail.events.subscribe(["slow"])
    await mail.add_jobs("slow", [{"name": "x", "data": {"i": i}} for i in range(20)])
    expected = await eventually(lambda: _xrange_ids(mail.client, prefix, "slow", "0-0"), 5,
                                "40 events in the stream", accept=lambda ids: len(ids) == 40)
    await asyncio.sleep(1.5)  # the reader overflows the 5-event buffer meanwhile
    got = await take(sub, 40)
    await sub.aclose()
    assert [e["id"] for e in got] == expected


async def test_a_dropped_subscription_leaves_the_fan_out(mail: MailManager) -> None:
    sub = mail.events.subscribe(["gone"])
    assert (await mail.get_event_stats())["subscribers"] == 1
    await sub.aclose()
    assert (await mail.get_event_stats())["subscribers"] == 0
    mail.events.subscribe(["gone"])  # never closed, dropped at once
    gc.collect()
    stats = await mail.get_event_stats()
    assert stats["subscribers"] == 0
    await eventually(mail.get_event_stats, 5, "the queue no longer watched",
                     accept=lambda found: "gone" not in found["watched_queues"])


async def test_bad_cursor_is_a_clear_error(mail: MailManager) -> None:
    with pytest.raises(MailQueueError, match="cursor"):
        mail.events.subscribe(last_id="not-a-cursor")


# --- surviving Redis -------------------------------------------------------------------------


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


# --- audit log ---------------------------------------------------------------------------


async def test_audit_log_is_capped_and_newest_first(
    settings: Settings, mail: MailManager
) -> None:
    capped = settings.model_copy(update={"audit_log_max": 10})
    manager = EventManager(connection_options(settings.redis_url or ""), mail.client,
                           settings.queue_prefix, capped)
    try:
        ids = [await manager.record_audit("ada", "retry", f"q/{i}", "ok", f"#{i}")
               for i in range(400)]
        log = await manager.get_audit_log(5)
        assert [e["id"] for e in log] == ids[::-1][:5]
        assert log[0]["actor"] == "ada" and log[0]["target"] == "q/399"
        assert log[0]["detail"] == "#399" and log[0]["result"] == "ok"
        assert log[0]["time"].endswith("+00:00")
        length = await mail.client.xlen(f"{settings.queue_prefix}:__mailqueue__:audit")
        assert length < 400 and length <= 10 + 100  # MAXLEN ~ trims whole stream nodes
        assert await manager.get_audit_log(0) == []
    finally:
        await manager.close()


async def test_audit_listeners_record_job_lifecycle(
    mail: MailManager, worker_factory: Callable[[str, Processor], Worker]
) -> None:
    await mail.setup_audit_listeners()
    await mail.setup_audit_listeners()  # idempotent: still one entry per event
    good = await mail.add_job("au", "x")
    bad = await mail.add_job("au", "y", attempts=1)
    worker_factory("au", lambda job, token: ok(job, token) if job.id == good.id
                   else boom(job, token))

    async def outcomes() -> list[dict[str, Any]]:
        return [e for e in await mail.get_audit_log() if e["actor"] == "system"
                and e["action"] in ("completed", "failed")]

    await eventually(outcomes, 10, "both jobs' outcomes audited",
                     accept=lambda found: len(found) >= 2)
    await asyncio.sleep(0.5)  # the window in which a second listener's copy would show
    entries = [e for e in await mail.get_audit_log() if e["actor"] == "system"]
    targets = {(e["action"], e["target"], e["result"]) for e in entries}
    assert ("completed", f"au/{good.id}", "ok") in targets
    assert ("failed", f"au/{bad.id}", "error") in targets
    assert len([e for e in entries if e["action"] == "failed"]) == 1
    failed = next(e for e in entries if e["action"] == "failed")
    assert failed["detail"] == "smtp down for y"


# --- alerts ------------------------------------------------------------------------------


async def test_alert_fires_once_at_the_threshold(
    settings: Settings, mail: MailManager,
    worker_factory: Callable[[str, Processor], Worker], caplog: pytest.LogCaptureFixture,
) -> None:
    tuned = settings.model_copy(update={"alert_failure_threshold": 3, "alert_window_s": 60})
    manager = EventManager(connection_options(settings.redis_url or ""), mail.client,
                           settings.queue_prefix, tuned)
    received: list[dict[str, Any]] = []
    awaited: list[dict[str, Any]] = []

    async def async_callback(alert: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        awaited.append(alert)

    manager.on_alert(received.append)
    manager.on_alert(async_callback)
    failures: list[dict[str, Any]] = []
    manager.on_event("al", "failed", failures.append)
    await asyncio.sleep(0.3)
    try:
        with caplog.at_level(logging.WARNING, logger="mailqueue.events"):
            await mail.add_job("al", "send-welcome", attempts=1)  # one other name
            worker_factory("al", boom)
            await eventually(lambda: len(failures) == 1)
            assert received == []
            for _ in range(5):
                await mail.add_job("al", "send-newsletter", attempts=1)
            await eventually(lambda: len(failures) == 6)
            await asyncio.sleep(0.3)

        # 3rd failure of the queue -> a queue alert; 3rd of send-newsletter -> a job alert.
        assert sorted((a["kind"], a["job_name"]) for a in received) == [
            ("job", "send-newsletter"), ("queue", "")]
        assert len(awaited) == 2
        assert all(a["queue"] == "al" and a["id"] for a in received)
        stored = await manager.get_alerts()
        assert sorted(a["id"] for a in stored) == sorted(a["id"] for a in received)
        assert {a["kind"] for a in stored} == {"queue", "job"}
        assert "failed 3 times within 60 s" in caplog.text
    finally:
        await manager.close()


# --- stats -----------------------------------------------------------------------------


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
