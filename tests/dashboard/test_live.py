"""Live streams over a real server: exact resume of the event stream, pushed page regions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis

from mailqueue.manager import MailManager
from tests.dashboard.conftest import read_sse


async def test_event_stream_resumes_from_last_event_id_without_loss(
    mail: MailManager, live_server: str, redis_client: aioredis.Redis, prefix: str
) -> None:
    await mail.create_queue("live")
    received: list[dict[str, str]] = []
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as client:
        async with client.stream("GET", "/api/events/stream?queues=live") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for i in range(3):
                await mail.add_job("live", "first", {"n": i})
            received += await read_sse(response, 3)
        # Disconnected: these happen while no one listens.
        for i in range(4):
            await mail.add_job("live", "second", {"n": i})
        last_id = received[-1]["id"]
        async with client.stream("GET", "/api/events/stream?queues=live",
                                 headers={"Last-Event-ID": last_id}) as response:
            # 4 adds, each writing "added" and "waiting"
            received += await read_sse(response, 8)

    stream = await redis_client.xrange(f"{prefix}:live:events")
    expected = [entry_id for entry_id, _ in stream]
    got = [json.loads(event["data"])["id"] for event in received]
    # The first connection saw its 3 events from the moment it connected; every later event
    # came exactly once, in order, across the reconnect.
    assert got == expected[: len(got)]
    assert len(got) == len(set(got)) == 3 + 8
    assert all(event["event"] == "job-event" for event in received)


async def test_event_stream_rejects_a_bad_cursor(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as client:
        response = await client.get("/api/events/stream",
                                    headers={"Last-Event-ID": "c1.not-a-cursor"})
    assert response.status_code == 400
    assert "Bad event cursor" in response.text


async def test_unknown_live_view_is_404(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as client:
        response = await client.get("/live?view=nope")
    assert response.status_code == 404


@contextlib.asynccontextmanager
async def sidebar_events(response: httpx.Response) -> AsyncIterator[list[str]]:
    """A list that fills with the data of every `sidebar` event as it arrives."""
    found: list[str] = []

    async def read() -> None:
        event, data = "", []
        async for line in response.aiter_lines():
            if not line:
                if event == "sidebar":
                    found.append("\n".join(data))
                event, data = "", []
            elif line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data.append(line.partition(":")[2][1:])

    reader = asyncio.create_task(read())
    try:
        yield found
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def test_every_page_stream_sends_the_sidebar_when_any_queue_changes(
    mail: MailManager, live_server: str, monkeypatch: Any
) -> None:
    """The queue page of `a` follows `a`; its sidebar must still see `b` change, at most
    every SIDEBAR_INTERVAL_S however busy `b` is."""
    from mailqueue.dashboard import live

    monkeypatch.setattr(live, "SIDEBAR_INTERVAL_S", 1.0)
    await mail.add_job("a", "send", {})
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as client:
        async with client.stream("GET", "/live?view=queue&queue=a&state=waiting") as response, \
                sidebar_events(response) as received:
            await asyncio.sleep(1.0)
            first = list(received)
            assert len(first) == 1  # with the first render
            assert 'id="sidebar"' in first[0] and 'sse-swap="sidebar"' in first[0]
            assert 'aria-current="page"' in first[0].split('/queues/a"')[1][:30]
            assert "/queues/b" not in first[0]

            async def busy_b() -> None:
                for n in range(40):  # 2 s of changes to another queue
                    await mail.add_job("b", "send", {"n": n})
                    await asyncio.sleep(0.05)

            producer = asyncio.create_task(busy_b())
            await asyncio.sleep(3.5)
            await producer
            later = received[1:]
    assert later and "/queues/b" in later[-1]
    assert 'title="40 waiting">40<' in later[-1]
    assert len(later) <= 4, f"{len(later)} sidebar renders in 3.5 s with a 1 s interval"


async def test_pages_without_live_regions_keep_their_sidebar_live(
    mail: MailManager, live_server: str
) -> None:
    await mail.add_job("a", "send", {})
    async with httpx.AsyncClient(base_url=live_server, timeout=10) as client:
        for path in ("/workers", "/schedules", "/outbox"):
            page = await client.get(path)
            layout = page.text.split('<div class="layout"', 1)[1].split(">", 1)[0]
            assert 'hx-ext="sse" sse-connect="/live?view=sidebar"' in layout, path
            assert 'sse-swap="sidebar"' in page.text
        async with client.stream("GET", "/live?view=sidebar") as response, \
                sidebar_events(response) as events:
            await asyncio.sleep(0.5)
            await mail.add_job("b", "send", {})
            await asyncio.sleep(4.0)
    assert events and "/queues/b" in events[-1]
