"""Bull Board's operator controls (issue 14): a queue's global concurrency and rate limit,
and a delayed job's delay and a job's priority. The scheduler edit is
tests/dashboard/test_schedule_edit.py; "latest", test_queue_latest.py; Redis memory,
test_redis_memory.py."""

from __future__ import annotations

import html
import re
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from mailqueue.dashboard.app import create_app
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token

HX = {"HX-Request": "true"}


async def _audit(mail: MailManager) -> dict[str, Any]:
    return (await mail.get_audit_log(1))[0]


def _limits_line(page: str) -> str:
    start = page.index('id="queue-limits"')
    text = re.sub(r"<[^>]+>", "", page[page.index(">", start) + 1:page.index("</p>", start)])
    return " ".join(html.unescape(text).split())


# --- global concurrency and rate limit -----------------------------------------------------

async def test_set_and_release_global_concurrency_and_rate_limit(
        mail: MailManager, client: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await mail.create_queue("q")
    meta = f"{mail.settings.queue_prefix}:q:meta"
    page = (await client.get("/queues/q")).text
    assert "global concurrency no limit" in _limits_line(page)
    assert "rate limit no limit" in _limits_line(page)
    token = await csrf_token(client, "/queues/q")

    answer = await client.post("/queues/q/concurrency", headers=HX,
                               data={"csrf_token": token, "concurrency": "3"})
    assert answer.status_code == 200 and "at most 3 job(s) active" in answer.text
    assert await redis_client.hget(meta, "concurrency") == "3"
    assert (await _audit(mail))["action"] == "queue.set-concurrency"

    answer = await client.post("/api/queues/q/rate-limit", headers={"X-CSRF-Token": token},
                               json={"max": 10, "duration_ms": 1000})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rate_limit"] == {"max": 10, "duration_ms": 1000}
    assert await redis_client.hmget(meta, ["max", "duration"]) == ["10", "1000"]
    # bullmq's own reader sees what the page wrote (Node's reads the same fields).
    q = await mail.queues.get_queue("q")
    assert await q.getGlobalConcurrency() == 3
    assert await q.getGlobalRateLimit() == {"max": 10, "duration": 1000}

    page = (await client.get("/queues/q")).text
    line = _limits_line(page)
    assert "global concurrency 3 active at most" in line
    assert "rate limit 10 jobs per 1 s" in line
    assert 'name="concurrency" min="1" step="1" required value="3"' in page
    assert (await client.get("/api/queues/q/limits")).json() == {
        "queue": "q", "concurrency": 3, "rate_limit": {"max": 10, "duration_ms": 1000}}

    answer = await client.post("/queues/q/concurrency/release", headers=HX,
                               data={"csrf_token": token})
    assert answer.status_code == 200 and "global concurrency released" in answer.text
    answer = await client.post("/queues/q/rate-limit/release", headers=HX,
                               data={"csrf_token": token})
    assert answer.status_code == 200 and "global rate limit released" in answer.text
    assert await redis_client.hmget(meta, ["concurrency", "max", "duration"]) == [None] * 3
    entry = await _audit(mail)
    assert entry["action"] == "queue.release-rate-limit" and entry["result"] == "ok"
    assert "no limit" in _limits_line((await client.get("/queues/q")).text)


async def test_bad_limits_are_one_line_422s_and_change_nothing(
        mail: MailManager, client: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await mail.create_queue("q")
    token = await csrf_token(client, "/queues/q")
    for path, form in [("concurrency", {"concurrency": "0"}),
                       ("concurrency", {"concurrency": "two"}),
                       ("concurrency", {"concurrency": "<b>1</b>"}),
                       ("rate-limit", {"max": "5", "duration_ms": ""}),
                       ("rate-limit", {"max": "-1", "duration_ms": "1000"})]:
        answer = await client.post(f"/queues/q/{path}", headers=HX,
                                   data={"csrf_token": token, **form})
        assert answer.status_code == 422, (path, form, answer.text)
        assert "<b>" not in answer.text and answer.text.count("\n") <= 1
    meta = f"{mail.settings.queue_prefix}:q:meta"
    assert await redis_client.hmget(meta, ["concurrency", "max", "duration"]) == [None] * 3
    assert (await _audit(mail))["result"] == "error"
    # A queue that does not exist is not created by a typo in the URL.
    answer = await client.post("/queues/nope/concurrency", headers=HX,
                               data={"csrf_token": token, "concurrency": "1"})
    assert answer.status_code == 404
    assert not await mail.queues.queue_exists("nope")


async def test_limits_and_job_controls_need_csrf_and_write_access(mail: MailManager,
                                                                  client: httpx.AsyncClient
                                                                  ) -> None:
    await mail.create_queue("q")
    job = await mail.add_job("q", "later", {}, delay=600_000)
    no_token = await client.post("/queues/q/concurrency", data={"concurrency": "1"})
    assert no_token.status_code == 403
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:3000") as viewer:
        page = (await viewer.get("/queues/q")).text
        assert "global concurrency no limit" in _limits_line(page)  # shown, not editable
        assert "Global concurrency…" not in page
        job_page = (await viewer.get(f"/queues/q/jobs/{job.id}")).text
        assert "Change delay" not in job_page
        token = await csrf_token(viewer, "/queues/q")
        for path in ("/queues/q/concurrency", "/queues/q/rate-limit",
                     "/queues/q/concurrency/release", "/queues/q/rate-limit/release",
                     f"/queues/q/jobs/{job.id}/delay", f"/queues/q/jobs/{job.id}/priority"):
            refused = await viewer.post(path, data={"csrf_token": token, "concurrency": "1",
                                                    "max": "1", "duration_ms": "1",
                                                    "delay_s": "1", "priority": "1"})
            assert refused.status_code == 403, path
    assert await (await mail.queues.get_queue("q")).getGlobalConcurrency() is None
    assert (await mail.queues.get_job("q", str(job.id)))["delay"] == 600_000


# --- a job's delay and priority -----------------------------------------------------------

async def test_change_a_delayed_jobs_delay(mail: MailManager, client: httpx.AsyncClient,
                                           redis_client: aioredis.Redis) -> None:
    job = await mail.add_job("q", "later", {}, delay=3_600_000)
    page = (await client.get(f"/queues/q/jobs/{job.id}")).text
    assert "Change delay" in page and "Change priority" not in page
    token = await csrf_token(client, f"/queues/q/jobs/{job.id}")
    before = int(time.time() * 1000)
    answer = await client.post(f"/queues/q/jobs/{job.id}/delay", headers=HX,
                               data={"csrf_token": token, "delay_s": "120"})
    assert answer.status_code == 200 and f"Job {job.id} now runs in 120 s" in answer.text
    score = await redis_client.zscore(f"{mail.settings.queue_prefix}:q:delayed", str(job.id))
    due = int(score or 0) // 0x1000
    assert before + 120_000 <= due <= time.time() * 1000 + 120_000  # from now, not from added
    assert (await mail.queues.get_job("q", str(job.id)))["delay"] == 120_000
    entry = await _audit(mail)
    assert entry["action"] == "job.change-delay" and entry["target"] == f"q/{job.id}"
    # JSON twin, in ms.
    answer = await client.post(f"/api/queues/q/jobs/{job.id}/delay",
                               headers={"X-CSRF-Token": token}, json={"delay_ms": 5000})
    assert answer.status_code == 200 and answer.json()["delay_ms"] == 5000


async def test_wrong_state_is_a_409_with_the_reason(mail: MailManager,
                                                    client: httpx.AsyncClient) -> None:
    waiting = await mail.add_job("q", "now", {})
    delayed = await mail.add_job("q", "later", {}, delay=600_000)
    token = await csrf_token(client, "/queues/q")
    answer = await client.post(f"/queues/q/jobs/{waiting.id}/delay", headers=HX,
                               data={"csrf_token": token, "delay_s": "10"})
    assert answer.status_code == 409
    assert f"Job &#39;{waiting.id}&#39; is waiting; only a delayed job" in answer.text
    entry = await _audit(mail)
    assert entry["action"] == "job.change-delay" and entry["result"] == "error"
    answer = await client.post(f"/api/queues/q/jobs/{delayed.id}/priority",
                               headers={"X-CSRF-Token": token}, json={"priority": 3})
    assert answer.status_code == 409
    assert answer.json()["message"] == (f"Job '{delayed.id}' is delayed; only a waiting or "
                                        "prioritized job's priority can change")
    assert (await mail.queues.get_job("q", str(delayed.id)))["priority"] == 0
    missing = await client.post("/queues/q/jobs/nope/delay", headers=HX,
                                data={"csrf_token": token, "delay_s": "1"})
    assert missing.status_code == 404
    bad = await client.post(f"/queues/q/jobs/{delayed.id}/delay", headers=HX,
                            data={"csrf_token": token, "delay_s": "soon"})
    assert bad.status_code == 422


async def test_change_priority_reorders_the_waiting_jobs(mail: MailManager,
                                                         client: httpx.AsyncClient) -> None:
    first = await mail.add_job("q", "a", {}, priority=5)
    second = await mail.add_job("q", "b", {}, priority=5)
    plain = await mail.add_job("q", "c", {})
    page = (await client.get(f"/queues/q/jobs/{second.id}")).text
    assert "Change priority" in page and 'value="5"' in page
    token = await csrf_token(client, f"/queues/q/jobs/{second.id}")
    answer = await client.post(f"/queues/q/jobs/{second.id}/priority", headers=HX,
                               data={"csrf_token": token, "priority": "1"})
    assert answer.status_code == 200 and "now has priority 1" in answer.text
    # A plain waiting job becomes prioritized too.
    answer = await client.post(f"/queues/q/jobs/{plain.id}/priority", headers=HX,
                               data={"csrf_token": token, "priority": "9"})
    assert answer.status_code == 200
    q = await mail.queues.get_queue("q")
    order = [j.id for j in await q.getJobs(["prioritized"], 0, -1, True)]
    assert order == [str(second.id), str(first.id), str(plain.id)]
    assert (await _audit(mail))["action"] == "job.change-priority"
