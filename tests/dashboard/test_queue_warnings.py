"""Warnings that stand out (issue 14): waiting jobs with no worker, a rate-limited queue
(BullMQ's `limiter` key with a TTL, as Queue.getRateLimitTtl reads it) and an overdue job
scheduler (next run more than a minute in the past), on the overview, the queue page and
their JSON twins; and none where all is well."""

from __future__ import annotations

import asyncio
import re
import time
from html import unescape
from typing import Any

import httpx
from bullmq import Job

from mailqueue.manager import MailManager

XSS = '<img src=x onerror="window.__xss=1">'


def warnings_of(page: str) -> list[str]:
    """The queue page's warnings, as text."""
    block = re.search(r'<div class="queue-warnings"[^>]*>(.*?)</div>', page, re.S)
    if not block:
        return []
    return [" ".join(unescape(re.sub(r"<[^>]+>", "", p)).split())
            for p in re.findall(r'<p class="warning[^"]*">(.*?)</p>', block.group(1), re.S)]


def overview_badges(page: str, queue: str) -> list[str]:
    row = re.search(rf'<tr[^>]*>\s*<td class="qname[^"]*"><a [^>]*>{re.escape(queue)}</a>'
                    r"(.*?)</tr>", page, re.S)
    assert row, queue
    return re.findall(r'<span class="badge warn [^"]*">([^<]*)</span>', row.group(1))


async def test_waiting_jobs_with_no_worker(mail: MailManager, client: httpx.AsyncClient) -> None:
    for n in range(3):
        await mail.add_job("idle", "send", {"n": n})
    page = (await client.get("/queues/idle")).text
    assert warnings_of(page) == [
        "No worker: 3 jobs waiting and no worker connected to this queue: nothing runs them. "
        "Start one (mailqueue worker idle) or check that yours reach this Redis and prefix."]
    overview = (await client.get("/")).text
    assert overview_badges(overview, "idle") == ["no worker"]
    assert re.search(r'<p class="warning summary"><strong>1 queue will not move:</strong>\s*'
                     r'<a href="[^"]*/queues/idle">idle</a> \(no worker\)', overview)
    api = (await client.get("/api/queues")).json()
    assert api["queues"][0]["warnings"] == [{"kind": "no-worker", "waiting": 3}]
    assert (await client.get("/api/queues/idle")).json()["warnings"][0]["kind"] == "no-worker"

    # Paused: its badge says why nothing runs; no warning.
    await mail.queues.pause("idle")
    assert warnings_of((await client.get("/queues/idle")).text) == []
    await mail.queues.resume("idle")

    # A worker connected (holding one job, two more waiting): no warning.
    release = asyncio.Event()

    async def hold(data: Any, job: Job) -> None:
        await release.wait()

    mail.start_worker("idle", {"send": hold}, concurrency=1)
    for _ in range(200):
        if (await mail.queues.get_job_counts("idle"))["active"] == 1:
            break
        await asyncio.sleep(0.025)
    assert warnings_of((await client.get("/queues/idle")).text) == []
    assert overview_badges((await client.get("/")).text, "idle") == []
    release.set()
    await mail.stop_worker("idle")


async def test_a_rate_limited_queue(mail: MailManager, client: httpx.AsyncClient) -> None:
    prefix = mail.settings.queue_prefix
    await mail.create_queue("limited")
    # Queue.rateLimit(ms): no job starts until it ends.
    await (await mail.queues.get_queue("limited")).rateLimit(60_000)
    [line] = warnings_of((await client.get("/queues/limited")).text)
    assert re.fullmatch(r"Rate-limited: set by hand \(Queue\.rateLimit\): no job starts for "
                        r"another (59|60)\.\d s\.", line), line
    assert overview_badges((await client.get("/")).text, "limited") == ["rate-limited"]
    # A global limit of 5 per minute: limited once 5 started in the window, not before.
    q = await mail.queues.get_queue("limited")
    await q.setGlobalRateLimit(5, 60_000)
    await mail.client.set(f"{prefix}:limited:limiter", 2, px=30_000)
    assert warnings_of((await client.get("/queues/limited")).text) == []
    await mail.client.set(f"{prefix}:limited:limiter", 5, px=30_000)
    [line] = warnings_of((await client.get("/queues/limited")).text)
    assert line.startswith("Rate-limited: 5 jobs started in this window, the limit is 5: "
                           "the next waits for another "), line
    api = (await client.get("/api/queues/limited")).json()["warnings"]
    assert api[0]["kind"] == "rate-limited" and api[0]["max"] == 5 and api[0]["count"] == 5
    # The window over (the key gone): no warning.
    await mail.client.delete(f"{prefix}:limited:limiter")
    assert warnings_of((await client.get("/queues/limited")).text) == []


async def test_an_overdue_job_scheduler(mail: MailManager, client: httpx.AsyncClient) -> None:
    prefix = mail.settings.queue_prefix
    await mail.schedule_job("sched", "send-digest", {}, cron="0 9 * * *",
                            scheduler_id="digest " + XSS)
    repeat = f"{prefix}:sched:repeat"
    now = int(time.time() * 1000)
    assert warnings_of((await client.get("/queues/sched")).text) == []  # due tomorrow
    await mail.client.zadd(repeat, {"digest " + XSS: now - 30_000})  # late by 30 s: fine
    assert warnings_of((await client.get("/queues/sched")).text) == []
    await mail.client.zadd(repeat, {"digest " + XSS: now - 5 * 60_000 - 500})
    page = (await client.get("/queues/sched")).text
    assert XSS not in page
    lines = warnings_of(page)
    [late] = [w for w in lines if w.startswith("Schedule overdue:")]
    assert re.fullmatch(rf"Schedule overdue: the job scheduler digest {re.escape(XSS)} was due "
                        r"5 min \d+ s ago: its next job is added only when a worker takes the "
                        r"last one\. Schedules", late), late
    assert "schedule overdue" in overview_badges((await client.get("/")).text, "sched")
    api = (await client.get("/api/queues")).json()["queues"]
    overdue = [w for w in api[0]["warnings"] if w["kind"] == "schedule-overdue"]
    assert overdue == [{"kind": "schedule-overdue", "count": 1, "id": "digest " + XSS,
                        "next_run": now - 5 * 60_000 - 500}]
