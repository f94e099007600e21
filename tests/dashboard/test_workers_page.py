"""The workers and Redis page: live workers per queue, the Redis summary, the JSON twin."""

from __future__ import annotations

import asyncio
import html
from typing import Any

import httpx
import pytest

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


async def test_age_and_idle_are_whole_seconds_not_milliseconds(
    client: httpx.AsyncClient, mail: MailManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLIENT LIST gives age and idle in whole seconds: 0 means "under a second", not
    "0 ms", and 125 is "2 min 5 s", not a made-up "125.0 s"-style precision."""
    await mail.create_queue("emails")
    workers = [
        {"queue": "emails", "name": "fresh", "addr": "127.0.0.1:1", "age_s": 0, "idle_s": 0,
         "language": "python", "client_name": "p:emails:w:fresh", "connections": 2},
        {"queue": "emails", "name": "old", "addr": "127.0.0.1:2", "age_s": 125, "idle_s": 7,
         "language": "python", "client_name": "p:emails:w:old", "connections": 2},
    ]

    async def list_workers(queue: str | None = None) -> list[dict[str, Any]]:
        return [w for w in workers if queue in (None, w["queue"])]

    monkeypatch.setattr(mail.workers, "list_workers", list_workers)
    page = await client.get("/workers")
    text = html.unescape(page.text)
    rows = text.split("<tbody>")[1].split("</tbody>")[0]
    assert "ms<" not in rows and ".0 s" not in rows
    assert '<td class="num">< 1 s</td>' in rows
    assert '<td class="num">2 min 5 s</td>' in rows and '<td class="num">7 s</td>' in rows
    assert "Workers <span class=\"muted\">(2)</span>" in text


async def test_one_worker_that_logs_is_one_row(client: httpx.AsyncClient, mail: MailManager
                                               ) -> None:
    """A worker's non-blocking client is a pool: every connection it opens carries the
    worker's client name, so one worker may hold three connections or more."""

    async def logs(data: Any, job: Any) -> str:
        await job.log("sending")
        return "ok"

    mail.start_worker("emails", {"send": logs})
    await mail.add_job("emails", "send", {})
    for _ in range(200):
        if (await mail.queues.get_job_counts("emails"))["completed"] == 1:
            break
        await asyncio.sleep(0.05)
    api = (await client.get("/api/workers")).json()
    assert api["total_workers"] == 1, api["queues"]
