"""EventManager's subscriptions: async iterators of events with resumable cursors, a slow
subscriber that catches up without loss, and a dropped one that leaves the fan-out."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from mailqueue.errors import MailQueueError
from mailqueue.events import Subscription
from mailqueue.events import streams as events_streams
from mailqueue.events import subscriptions as events_subscriptions
from mailqueue.manager import MailManager
from tests.mailqueue.event_support import event_ids
from tests.waiting import eventually


async def take(sub: Subscription, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in sub:
            got.append(event)
            if len(got) == n:
                return

    await asyncio.wait_for(collect(), timeout)
    return got


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
        expected |= {(queue, i) for i in await event_ids(mail.client, prefix, queue, after)}
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
    ids = await event_ids(mail.client, prefix, "p", "0-0")
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
    expected = await eventually(lambda: event_ids(mail.client, prefix, "slow", "0-0"), 5,
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
