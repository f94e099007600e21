"""Fault scenario (issue 11, point 11): Redis stalls (`DEBUG SLEEP 10`) under load.

A stalled Redis accepts connections and commands but answers nothing until it wakes, so
nothing fails on its own: without a command timeout every page and `/health` of the
dashboard hung until Redis woke (a load balancer saw no 503, an operator no banner).

The Redis is the test's own; a `mailqueue worker` process sends to an SMTP sink in the test
process (its outbox lives in the suite's Redis, which does not stall); a `mailqueue
dashboard` process serves pages and a live (SSE) page. While Redis sleeps, `/health`, JSON
routes, pages and an htmx partial each answer 503 (with the "Redis is unavailable" banner or
a JSON reason) within BOUND_S, the live page shows its banner; after Redis wakes everything
answers 200 again, the live banner is cleared, and the worker delivers every job once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.faults.system import (
    MailqueueProcess,
    dashboard_serving,
    own_redis,
    own_settings,
    start_dashboard,
    start_worker,
)
from tests.faults.test_redis_restart import assert_redis_banner
from tests.faults.test_worker_killed import report
from tests.mailqueue.mail.test_mail_faults import NOTIFY, drained, message_ids
from tests.waiting import eventually, eventually_sync

STALL_S = 10
# The goal is 2 s (REDIS_COMMAND_TIMEOUT_S is 1.5 s); 3 s leaves room for a busy shared
# machine without letting a hang (which lasts the whole stall) pass.
BOUND_S = 3.0
# The live page learns of the stall from its hub's probe (once a second, then the timeout).
LIVE_BOUND_S = 5.0
TOTAL = 1000
STALL_RCPT = "added-during-the-stall@example.com"
PAGES = ["/", "/queues/emails", "/queues/emails/jobs/1", "/workers", "/events", "/schedules"]
JSON_ROUTES = ["/health", "/api/queues", "/api/queues/emails", "/api/workers"]


class LiveBanner:
    """Reads `/live?view=overview` as a browser's EventSource would, and keeps the time of
    every `banner` message (data: shown, empty: cleared)."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.banners: list[tuple[float, str]] = []
        self.regions = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task

    def shown_after(self, since: float) -> float | None:
        return next((t - since for t, data in self.banners if t >= since and data), None)

    def cleared_after(self, since: float) -> float | None:
        return next((t - since for t, data in self.banners if t >= since and not data), None)

    async def _read(self) -> None:
        async with self.client.stream("GET", self.url, timeout=None,
                                      headers={"Accept": "text/event-stream"}) as reply:
            assert reply.status_code == 200, reply.status_code
            event, data = "", list[str]()
            async for line in reply.aiter_lines():
                if line == "":
                    if event == "banner":
                        self.banners.append((time.monotonic(), "\n".join(data)))
                    elif event:
                        self.regions += 1
                    event, data = "", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))


def stall(url: str, seconds: int) -> threading.Thread:
    """`DEBUG SLEEP` from a connection of its own, in a thread: the command blocks the whole
    server, and this connection, until it ends."""
    def sleep() -> None:
        client = redis.Redis.from_url(url, socket_timeout=None)
        try:
            client.execute_command("DEBUG", "SLEEP", seconds)
        finally:
            client.close()

    thread = threading.Thread(target=sleep, name="redis-debug-sleep")
    thread.start()
    return thread


def wait_until_asleep(url: str, timeout: float = 5) -> None:
    """Returns once Redis does not answer a PING within 0.2 s: the stall has begun."""
    probe = redis.Redis.from_url(url, socket_timeout=0.2)

    def asleep() -> bool:
        try:
            probe.ping()
        except redis.TimeoutError:
            return True
        return False

    try:
        eventually_sync(asleep, timeout, "Redis not answering after DEBUG SLEEP", interval=0.01)
    finally:
        probe.close()


async def timed_get(http: httpx.AsyncClient, url: str, **kwargs: Any
                    ) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = await http.get(url, **kwargs)
    return reply, time.monotonic() - started


async def test_redis_stalled_dashboard_answers_503_fast(
    tmp_path: Path, prefix: str, redis_client: aioredis.Redis,
) -> None:
    # DEBUG is refused by default since Redis 7; `local`: only from this machine.
    server = own_redis(tmp_path / "redis", "--enable-debug-command", "local")
    settings = own_settings(server, prefix, tmp_path)
    sink = MailSink(redis_client, prefix, max_messages=10_000, register=False)
    await sink.start()
    processes: list[MailqueueProcess] = []
    http = httpx.AsyncClient(timeout=60)
    live: LiveBanner | None = None
    sleeper: threading.Thread | None = None
    mail = await MailManager(settings).start()
    try:
        await mail.create_queue("emails")
        jobs = await mail.add_jobs("emails", [
            {"name": "send-notification", "data": {**NOTIFY, "to": f"u{i}@example.com"},
             "opts": {"removeOnComplete": False, "removeOnFail": False}}
            for i in range(TOTAL)
        ])
        dashboard, base = start_dashboard(tmp_path, redis_url=server.url, prefix=prefix)
        processes.append(dashboard)
        for path in PAGES + JSON_ROUTES:  # all well before the stall
            reply = await http.get(base + path)
            assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:300]}"
        live = LiveBanner(http, f"{base}/live?view=overview")
        live.start()

        async def live_rendered() -> bool:
            return live.regions > 0

        await eventually(live_rendered, 30)
        # Default worker settings (30 s locks): the stall is shorter than a lock.
        processes.append(start_worker(tmp_path, redis_url=server.url, prefix=prefix,
                                      concurrency=10, SMTP_URL=sink.url))

        async def some_sent() -> bool:
            return await sink.outbox.count() >= TOTAL // 10

        await eventually(some_sent, 60)
        sleeper = stall(server.url, STALL_S)
        await asyncio.to_thread(wait_until_asleep, server.url)
        asleep_at = time.monotonic()
        sent_at_stall = await sink.outbox.count()

        # Redis asleep: every answer is a 503 that says so, each within BOUND_S.
        pages, partial, api = await asyncio.gather(
            asyncio.gather(*(timed_get(http, base + path) for path in PAGES)),
            timed_get(http, base + "/queues/emails", headers={"HX-Request": "true"}),
            asyncio.gather(*(timed_get(http, base + path) for path in JSON_ROUTES)),
        )
        answered_in = time.monotonic() - asleep_at
        # The API's own calls through bullmq's Queue (not only the dashboard's client): a
        # read and an add give up within the timeout too. bullmq's own connection retried a
        # timed-out command 20 times: the call waited out the stall and the add was sent
        # twice (two jobs).
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await mail.queues.get_job("emails", str(jobs[-1].id))
        get_job_s = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await mail.add_job("emails", "send-notification", {**NOTIFY, "to": STALL_RCPT})
        add_job_s = time.monotonic() - started
        figures = {path: round(elapsed, 2) for path, (_, elapsed) in [
            *zip(PAGES, pages, strict=True), ("htmx partial", partial),
            *zip(JSON_ROUTES, api, strict=True)]}
        print(f"\nanswers during the stall (s): {figures}")
        assert answered_in < STALL_S, "answered only once Redis woke up"
        for path, (reply, _) in zip(PAGES, pages, strict=True):
            assert_redis_banner(reply, path)
            assert "Redis is unavailable" in reply.text, path
        assert_redis_banner(partial[0], "htmx partial")
        assert partial[0].headers.get("hx-retarget") == "#banner"
        for path, (reply, _) in zip(JSON_ROUTES, api, strict=True):
            assert reply.status_code == 503, f"{path}: {reply.status_code} {reply.text}"
            assert reply.json()["healthy"] is False, reply.text
        health = api[0][0].json()
        assert "did not answer within 1.5 s" in str(health), health
        figures["API get_job"] = round(get_job_s, 2)
        figures["API add_job"] = round(add_job_s, 2)
        slow = {path: s for path, s in figures.items() if s > BOUND_S}
        assert not slow, f"answered later than {BOUND_S} s: {slow}"

        async def live_banner_shown() -> bool:
            return live.shown_after(asleep_at) is not None

        await eventually(live_banner_shown, STALL_S)
        live_shown_s = live.shown_after(asleep_at)

        await asyncio.to_thread(sleeper.join, STALL_S + 30)
        assert not sleeper.is_alive()
        awake_at = time.monotonic()
        await dashboard_serving(http, base, 30)
        recovery_s = time.monotonic() - awake_at
        for path in PAGES + JSON_ROUTES:
            reply = await http.get(base + path)
            assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:300]}"

        async def live_banner_cleared() -> bool:
            return live.cleared_after(awake_at) is not None

        await eventually(live_banner_cleared, 30)
        live_cleared_s = live.cleared_after(awake_at)

        async def all_done() -> bool:
            return len(await message_ids(sink)) >= TOTAL and await drained(mail)

        await eventually(all_done, 120)
        # The add that timed out may still have been run when Redis woke: at most once.
        # Job ids count up: that add would be the next id (a second copy the one after).
        last = int(str(jobs[-1].id))
        late = [{"id": str(n)} for n in (last + 1, last + 2)
                if STALL_RCPT in str(await mail.client.hget(f"{prefix}:emails:{n}", "data"))]
        assert len(late) <= 1, f"the timed-out add ran {len(late)} times"
        expected = {f"<emails.{job.id}@localhost>" for job in jobs}
        expected |= {f"<emails.{j['id']}@localhost>" for j in late}
        for process in processes:
            assert process.process.poll() is None, process.output()
        states: dict[str, int] = {}
        for job_id in [*(str(job.id) for job in jobs), *(str(j["id"]) for j in late)]:
            info = await mail.queues.get_job("emails", job_id)
            state = str(info["state"])
            states[state] = states.get(state, 0) + 1
        ids = await message_ids(sink)
        duplicates = sum(count - 1 for count in ids.values())
        report("redis_stall", {
            "stall_s": STALL_S,
            "jobs": TOTAL,
            "sent_before_stall": sent_at_stall,
            "slowest_answer_during_stall_s": max(figures.values()),
            "health_503_s": figures["/health"],
            "live_banner_shown_s": round(live_shown_s or 0, 2),
            "recovery_200_s": round(recovery_s, 2),
            "live_banner_cleared_s": round(live_cleared_s or 0, 2),
            "api_get_job_s": figures["API get_job"],
            "api_add_job_s": figures["API add_job"],
            "timed_out_add_applied": len(late),
            "completed": states.get("completed", 0),
            "delivered_distinct": len(ids),
            "duplicates": duplicates,
        })
        assert recovery_s <= BOUND_S, f"the dashboard took {recovery_s:.1f} s to recover"
        assert live_shown_s is not None and live_shown_s <= LIVE_BOUND_S, live_shown_s
        assert live_cleared_s is not None and live_cleared_s <= LIVE_BOUND_S, live_cleared_s
        assert states == {"completed": TOTAL + len(late)}, states
        assert set(ids) == expected
        assert duplicates == 0
    finally:
        if live is not None:
            await live.stop()
        if sleeper is not None:
            await asyncio.to_thread(sleeper.join, STALL_S + 30)
        await http.aclose()
        for process in processes:
            process.stop()
        await sink.stop()
        await mail.close()
        server.stop()
