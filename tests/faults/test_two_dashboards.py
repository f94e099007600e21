"""Two `mailqueue dashboard` processes on one Redis, as behind a load balancer.

A browser's SSE stream read from process A, which then goes away, reconnects to process B
with the Last-Event-ID A gave it: B resumes exactly there, with nothing lost and nothing twice
(compared with the events stream itself, XRANGE). No sticky sessions needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from mailqueue.manager import MailManager
from tests.dashboard.conftest import read_sse
from tests.faults.system import start_dashboard


async def test_sse_stream_resumes_on_the_other_dashboard_process(
    mail: MailManager, redis_client: aioredis.Redis, tmp_path: Path, redis_url: str,
    prefix: str,
) -> None:
    await mail.create_queue("live")
    await mail.create_queue("other")
    dashboard_a, base_a = start_dashboard(tmp_path, redis_url=redis_url, prefix=prefix)
    dashboard_b, base_b = start_dashboard(tmp_path, redis_url=redis_url, prefix=prefix)
    path = "/api/events/stream?queues=live,other"
    received: list[dict[str, str]] = []
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("GET", base_a + path) as response:
                assert response.status_code == 200
                for i in range(3):
                    await mail.add_job("live", "first", {"n": i})
                    await mail.add_job("other", "first", {"n": i})
                # 6 adds, each writing "added" and "waiting"
                received += await read_sse(response, 12, timeout=30)
            # A goes away (a deploy, a crash); events keep happening meanwhile.
            assert dashboard_a.stop(timeout=30) is not None
            for i in range(4):
                await mail.add_job("live", "second", {"n": i})
                await mail.add_job("other", "second", {"n": i})
            last_id = received[-1]["id"]
            async with client.stream("GET", base_b + path,
                                     headers={"Last-Event-ID": last_id}) as response:
                assert response.status_code == 200
                resumed = await read_sse(response, 16, timeout=30)
                assert resumed[0]["id"] != last_id
                received += resumed
    finally:
        dashboard_a.stop()
        dashboard_b.stop()

    got = [(json.loads(e["data"])["queue"], json.loads(e["data"])["id"]) for e in received]
    assert len(got) == len(set(got)) == 12 + 16
    for queue in ("live", "other"):
        stream = [entry_id for entry_id, _ in await redis_client.xrange(f"{prefix}:{queue}:events")]
        mine = [event_id for q, event_id in got if q == queue]
        # Every event of the queue, in order, across the switch from A to B: exactly XRANGE's.
        assert mine == stream, queue
    assert all(e["event"] == "job-event" for e in received)
