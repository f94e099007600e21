"""Queue actions: each does what it says, is audited, needs CSRF, and is refused read-only."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from bullmq import Job

from mailqueue.dashboard.app import create_app
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token


async def _failed_jobs(mail: MailManager, queue: str, n: int) -> None:
    async def handler(data: Any, job: Job) -> None:
        raise RuntimeError("nope")

    await mail.add_jobs(queue, [{"name": "job", "data": {}, "opts": {"attempts": 1}}
                                for _ in range(n)])
    worker = mail.start_worker(queue, {"job": handler})
    for _ in range(200):
        if (await mail.queues.get_job_counts(queue))["failed"] == n:
            break
        await asyncio.sleep(0.05)
    await worker.close()


async def _last_audit(mail: MailManager) -> dict[str, Any]:
    return (await mail.get_audit_log(5))[0]


async def test_retry_failed_promote_delayed_and_clean(mail: MailManager,
                                                      client: httpx.AsyncClient) -> None:
    await _failed_jobs(mail, "q", 3)
    token = await csrf_token(client, "/queues/q")
    answer = await client.post("/queues/q/retry-failed", data={"csrf_token": token})
    assert answer.status_code == 303
    counts = await mail.queues.get_job_counts("q")
    assert counts["failed"] == 0 and counts["waiting"] == 3
    entry = await _last_audit(mail)
    assert entry["action"] == "queue.retry-failed" and entry["target"] == "q"

    await mail.add_job("q", "later", {}, delay=600_000)
    answer = await client.post("/api/queues/q/promote-delayed",
                               headers={"X-CSRF-Token": token})
    assert answer.json()["promoted"] == 1
    assert (await mail.queues.get_job_counts("q"))["delayed"] == 0

    answer = await client.post("/queues/q/clean", headers={"HX-Request": "true"},
                               data={"csrf_token": token, "state": "waiting", "grace": "0"})
    assert answer.status_code == 200 and "Removed 4 waiting" in answer.text
    assert (await mail.queues.get_job_counts("q"))["waiting"] == 0
    bad = await client.post("/api/queues/q/clean", headers={"X-CSRF-Token": token},
                            json={"state": "everything"})
    assert bad.status_code == 422 and (await _last_audit(mail))["result"] == "error"


async def test_pause_resume_drain_and_obliterate(mail: MailManager, client: httpx.AsyncClient
                                                 ) -> None:
    await mail.add_jobs("q", [{"name": "job", "data": {}} for _ in range(3)])
    await mail.add_job("q", "later", {}, delay=600_000)
    token = await csrf_token(client, "/queues/q")
    headers = {"X-CSRF-Token": token}
    assert (await client.post("/api/queues/q/pause", headers=headers)).json()["ok"]
    assert await mail.queues.is_paused("q")
    assert (await client.post("/api/queues/q/resume", headers=headers)).json()["ok"]
    assert not await mail.queues.is_paused("q")

    await client.post("/api/queues/q/drain", headers=headers, json={})
    counts = await mail.queues.get_job_counts("q")
    assert counts["waiting"] == 0 and counts["delayed"] == 1
    await client.post("/api/queues/q/drain", headers=headers, json={"delayed": "1"})
    assert (await mail.queues.get_job_counts("q"))["delayed"] == 0

    refused = await client.post("/queues/q/obliterate", headers={"HX-Request": "true"},
                                data={"csrf_token": token, "confirm_name": "Q"})
    assert refused.status_code == 422 and "type the queue name" in refused.text
    assert await mail.queues.queue_exists("q")
    assert (await _last_audit(mail))["result"] == "error"
    done = await client.post("/queues/q/obliterate", headers={"HX-Request": "true"},
                             data={"csrf_token": token, "confirm_name": "q"})
    assert done.status_code == 200 and done.headers["HX-Location"].endswith("/")
    assert "q" not in await mail.queues.list_queues(refresh=True)
    assert (await _last_audit(mail))["action"] == "queue.obliterate"


async def test_add_job_validates_in_place(mail: MailManager, client: httpx.AsyncClient) -> None:
    await mail.create_queue("q")
    token = await csrf_token(client, "/queues/q")
    htmx = {"HX-Request": "true"}
    bad_json = await client.post("/queues/q/add-job", headers=htmx, data={
        "csrf_token": token, "name": "send", "data": "{not json"})
    assert bad_json.status_code == 422 and "Data is not valid JSON" in bad_json.text
    bad_opts = await client.post("/queues/q/add-job", headers=htmx, data={
        "csrf_token": token, "name": "send", "data": "{}", "opts": '{"attempts": 0}'})
    assert bad_opts.status_code == 422 and "attempts" in bad_opts.text
    ok = await client.post("/api/queues/q/add-job", headers={"X-CSRF-Token": token}, json={
        "name": "send", "data": '{"to": "ada@example.com"}', "opts": '{"priority": 3}'})
    assert ok.status_code == 200
    job = await mail.queues.get_job("q", ok.json()["job_id"])
    assert job["data"] == {"to": "ada@example.com"} and job["priority"] == 3
    assert (await client.post("/api/queues/missing/add-job", headers={"X-CSRF-Token": token},
                              json={"name": "x"})).status_code == 404


async def test_multi_select_retry_and_remove(mail: MailManager, client: httpx.AsyncClient
                                             ) -> None:
    await _failed_jobs(mail, "q", 3)
    token = await csrf_token(client, "/queues/q?state=failed")
    answer = await client.post("/queues/q/selected/retry",
                               data={"csrf_token": token, "job_id": ["1", "2"]})
    assert answer.status_code == 303
    counts = await mail.queues.get_job_counts("q")
    assert counts["failed"] == 1 and counts["waiting"] == 2
    answer = await client.post("/api/queues/q/selected/remove",
                               headers={"X-CSRF-Token": token}, json={"job_ids": ["3", "404"]})
    assert answer.status_code == 200 and answer.json()["done"] == ["3"]
    assert answer.json()["ok"] is False and "404" in answer.json()["message"]
    assert (await mail.queues.get_job_counts("q"))["failed"] == 0
    assert (await _last_audit(mail))["action"] == "queue.remove-selected"


async def test_csrf_and_read_only_are_enforced(mail: MailManager, client: httpx.AsyncClient
                                               ) -> None:
    await mail.add_job("q", "job", {})
    assert (await client.post("/queues/q/pause", data={})).status_code == 403
    assert (await client.post("/api/queues/pause-all")).status_code == 403
    assert not await mail.queues.is_paused("q")

    read_only = mail.settings.model_copy(update={"dashboard_read_only": True})
    app = create_app(read_only, mail)
    app.state.mail = mail
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:3000") as viewer:
        page = await viewer.get("/queues/q")
        assert page.status_code == 200 and "Retry selected" not in page.text
        assert "Obliterate" not in page.text and "Pause" not in page.text.split("</header>")[1]
        token = await csrf_token(viewer, "/queues/q")
        refused = await viewer.post("/queues/q/pause", data={"csrf_token": token})
        assert refused.status_code == 403
    assert not await mail.queues.is_paused("q")
