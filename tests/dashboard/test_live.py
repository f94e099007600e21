"""Live streams over a real server: exact resume of the event stream, pushed page regions."""

from __future__ import annotations

import json

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
