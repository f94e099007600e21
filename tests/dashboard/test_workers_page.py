"""The workers and Redis page: live workers per queue, the Redis summary, the JSON twin."""

from __future__ import annotations

import asyncio
import html
from typing import Any

import httpx

from mailqueue.manager import MailManager


async def _handler(data: Any, job: Any) -> str:
    return "ok"


async def _wait_for_workers(mail: MailManager, queue: str) -> None:
    for _ in range(100):
        if await mail.workers.list_workers(queue):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never showed up in CLIENT LIST")


async def test_page_shows_workers_and_redis(client: httpx.AsyncClient, mail: MailManager
                                            ) -> None:
    await mail.create_queue("idle-queue")
    mail.start_worker("emails", {"noop": _handler}, concurrency=2)
    await _wait_for_workers(mail, "emails")
    page = await client.get("/workers")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "emails" in text and "Python" in text and "127.0.0.1:" in text
    assert "idle-queue" in text and "no worker" in text
    info = await mail.redis_info()
    assert info["version"] and f"{info['version']}" in text
    for label in ("Memory used", "Memory peak", "Connected clients", "Operations per second",
                  "Uptime"):
        assert label in text

    api = (await client.get("/api/workers")).json()
    queues = {q["name"]: q["workers"] for q in api["queues"]}
    assert len(queues["emails"]) == 1 and queues["idle-queue"] == []
    worker = queues["emails"][0]
    assert worker["language"] == "python" and worker["addr"].startswith("127.0.0.1:")
    assert worker["age_s"] >= 0 and worker["idle_s"] >= 0
    assert api["total_workers"] == 1
    assert api["redis"]["used_memory"] > 0 and api["redis"]["connected_clients"] >= 2
    assert api["redis"]["uptime_s"] >= 0 and "ops_per_sec" in api["redis"]
