"""The job page, its JSON twin, the data download and the per-job actions, over httpx against
a real Redis."""

from __future__ import annotations

import asyncio
import json
import re
from html import unescape
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from bullmq import Job

from mailqueue.dashboard.app import create_app
from mailqueue.dashboard.views.jobs import live_job
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token

XSS = "<script>alert(1)</script>"


def job_url(queue: str, job_id: str, suffix: str = "", api: bool = False) -> str:
    base = f"/api/queues/{quote(queue, safe='')}" if api else f"/queues/{quote(queue, safe='')}"
    return f"{base}/jobs/{quote(job_id, safe='')}{suffix}"


async def wait_for_state(mail: MailManager, queue: str, job_id: str, state: str,
                         timeout: float = 10.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await mail.queues.get_job_view(queue, job_id)
        if job["state"] == state:
            return dict(job)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} is {job['state']}, not {state}")
        await asyncio.sleep(0.05)


async def failed_job(mail: MailManager, queue: str = "jobs", job_id: str = "fail-1",
                     name: str = "boom") -> None:
    """A job that logged and failed twice (attempts=2): two stack traces."""

    async def boom(data: Any, job: Job) -> None:
        await job.log(f"attempt {job.attemptsMade + 1} {XSS}")
        raise RuntimeError(f"bad {XSS}")

    await mail.add_job(queue, name, {"to": "ada@example.com", "html": XSS}, attempts=2,
                       jobId=job_id)
    mail.start_worker(queue, {name: boom})
    await wait_for_state(mail, queue, job_id, "failed")
    await mail.stop_worker(queue)


async def test_job_page_shows_everything(mail: MailManager, client: httpx.AsyncClient) -> None:
    await failed_job(mail)
    page = await client.get(job_url("jobs", "fail-1"))
    assert page.status_code == 200
    html = page.text
    assert "ada@example.com" in html  # data
    # Options, as JSON text (coloured: tags between the tokens).
    assert '"attempts": 2' in unescape(re.sub(r"<[^>]+>", "", html))
    assert "state-failed" in html
    assert html.count("<summary>Attempt ") == 2  # one stack trace per attempt
    assert "RuntimeError" in html
    assert "attempt 1 " in unescape(html) and "attempt 2 " in unescape(html)  # logs
    for label in ("Added", "Started", "Finished"):  # timeline
        assert f"<th>{label}</th>" in html
    assert 'sse-connect="/live?view=job&amp;queue=jobs&amp;job_id=fail-1"' in html
    assert "Retry</button>" in html and "Promote</button>" not in html  # failed, not delayed
    assert 'hx-confirm="Remove job fail-1?' in html
    for region in ("job-summary", "job-logs", "job-family"):
        assert f'id="{region}"' in html and f'sse-swap="{region}"' in html
    assert 'style="' not in html.split("<main", 1)[1].split("</main>")[0].replace(
        '<p class="empty" style="padding: 0 .9rem">', "")
    assert "<script>" not in html.split("</head>", 1)[1]

    api = (await client.get(job_url("jobs", "fail-1", api=True))).json()
    assert api["job"]["state"] == "failed"
    assert len(api["job"]["stacktrace"]) == 2
    assert api["job"]["data"]["to"] == "ada@example.com"
    assert api["logs"]["count"] == 2


async def test_everything_untrusted_is_escaped(mail: MailManager,
                                               client: httpx.AsyncClient) -> None:
    await failed_job(mail, name=f"name {XSS}")
    html = (await client.get(job_url("jobs", "fail-1"))).text
    assert XSS not in html
    assert "alert(1)" in html  # it is there, escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_missing_job_is_a_404_page(mail: MailManager, client: httpx.AsyncClient) -> None:
    await mail.add_job("jobs", "x", {})
    page = await client.get(job_url("jobs", "nope"))
    assert page.status_code == 404
    assert "Job not found" in page.text
    assert (await client.get(job_url("jobs", "nope", api=True))).status_code == 404
    assert (await client.get(job_url("no-such-queue", "1"))).status_code == 404


async def test_ten_megabyte_payload_page_stays_small(mail: MailManager,
                                                     client: httpx.AsyncClient) -> None:
    payload = {"blob": "x" * (10 * 1024 * 1024), "tail": "end"}
    await mail.add_job("big", "huge", payload, jobId="huge")
    loop = asyncio.get_running_loop()
    started = loop.time()
    page = await client.get(job_url("big", "huge"))
    elapsed = loop.time() - started
    assert page.status_code == 200
    assert len(page.content) < 200 * 1024
    assert elapsed < 2.0
    assert "Download the whole JSON" in page.text
    link = re.search(r'href="([^"]+/data\.json)"', page.text)
    assert link
    download = await client.get(unescape(link.group(1)))
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/json")
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.json() == payload
    api = await client.get(job_url("big", "huge", api=True))
    assert len(api.content) < 200 * 1024 and api.json()["job"]["data_truncated"] is True


@pytest.mark.parametrize("job_id", ["ünï-cødé-✉", "tenant/42", "a/b/flow"])
async def test_awkward_job_ids_open(mail: MailManager, client: httpx.AsyncClient,
                                    job_id: str) -> None:
    await mail.add_job("odd", "x", {"id": job_id}, jobId=job_id)
    page = await client.get(job_url("odd", job_id))
    assert page.status_code == 200, page.text
    assert f"#{job_id}" in page.text
    # The links the page gives lead back to the same job.
    data = re.search(r'href="([^"]+/data\.json)"', page.text)
    assert data is None  # small data: no download link needed
    api_link = re.search(r'href="(/api/queues/[^"]+)">JSON', page.text)
    assert api_link
    api = await client.get(unescape(api_link.group(1)))
    assert api.json()["job"]["id"] == job_id
    download = await client.get(job_url("odd", job_id, "/data.json"))
    assert download.json() == {"id": job_id}


async def post(client: httpx.AsyncClient, url: str, token: str,
               data: dict[str, str] | None = None, htmx: bool = False) -> httpx.Response:
    headers = {"HX-Request": "true"} if htmx else {}
    return await client.post(url, data={"csrf_token": token, **(data or {})}, headers=headers)


async def test_retry_promote_remove_duplicate(mail: MailManager,
                                              client: httpx.AsyncClient) -> None:
    await failed_job(mail)
    token = await csrf_token(client, job_url("jobs", "fail-1"))

    answer = await post(client, job_url("jobs", "fail-1", "/retry"), token, htmx=True)
    assert answer.status_code == 200 and "waiting to run again" in answer.text
    assert (await mail.queues.get_job_view("jobs", "fail-1"))["state"] == "waiting"
    assert (await mail.get_audit_log(5))[0]["action"] == "job.retry"

    await mail.add_job("jobs", "later", {"n": 1}, jobId="late", delay=600_000, attempts=3)
    answer = await post(client, job_url("jobs", "late", "/promote"), token)
    assert answer.status_code == 303  # a plain form goes back
    assert (await mail.queues.get_job_view("jobs", "late"))["state"] == "waiting"
    assert (await mail.get_audit_log(5))[0]["action"] == "job.promote"

    answer = await client.post(job_url("jobs", "late", "/duplicate", api=True),
                               headers={"X-CSRF-Token": token})
    assert answer.status_code == 200
    copy_id = answer.json()["job_id"]
    assert copy_id != "late"
    copy = await mail.queues.get_job_view("jobs", copy_id)
    assert copy["name"] == "later" and copy["data"] == {"n": 1}
    assert copy["opts"]["attempts"] == 3
    assert (await mail.get_audit_log(5))[0]["action"] == "job.duplicate"

    answer = await post(client, job_url("jobs", "late", "/remove"), token, htmx=True)
    assert answer.status_code == 200 and "HX-Location" in answer.headers
    assert (await client.get(job_url("jobs", "late"))).status_code == 404
    entry = (await mail.get_audit_log(5))[0]
    assert entry["action"] == "job.remove" and "late" in entry["target"]


async def test_edit_data(mail: MailManager, client: httpx.AsyncClient) -> None:
    await mail.add_job("jobs", "x", {"to": "a@example.com"}, jobId="e1")
    page = await client.get(job_url("jobs", "e1"))
    assert 'name="data"' in page.text  # the textarea
    token = await csrf_token(client, job_url("jobs", "e1"))

    answer = await post(client, job_url("jobs", "e1", "/data"), token,
                        {"data": json.dumps({"to": "b@example.com"})})
    assert answer.status_code == 303
    assert (await mail.queues.get_job_view("jobs", "e1"))["data"] == {"to": "b@example.com"}
    assert (await mail.get_audit_log(5))[0]["action"] == "job.update-data"


async def test_edit_data_with_invalid_json_keeps_the_text(mail: MailManager,
                                                          client: httpx.AsyncClient) -> None:
    await mail.add_job("jobs", "x", {"to": "a@example.com"}, jobId="e2")
    token = await csrf_token(client, job_url("jobs", "e2"))
    broken = '{"to": "b@example.com", <oops>'

    # Without JavaScript: the page again, the text in the textarea, the error beside it.
    answer = await post(client, job_url("jobs", "e2", "/data"), token, {"data": broken})
    assert answer.status_code == 422
    textarea = re.search(r"<textarea[^>]*>(.*?)</textarea>", answer.text, re.S)
    assert textarea and unescape(textarea.group(1)) == broken
    assert "Invalid JSON" in answer.text
    # With htmx: only the error, swapped in place (a 200 so htmx shows it).
    answer = await post(client, job_url("jobs", "e2", "/data"), token, {"data": broken},
                        htmx=True)
    assert answer.status_code == 200 and "Invalid JSON" in answer.text
    assert "<textarea" not in answer.text
    # As JSON: a 422.
    answer = await client.post(job_url("jobs", "e2", "/data", api=True),
                               json={"data": broken}, headers={"X-CSRF-Token": token})
    assert answer.status_code == 422 and answer.json()["ok"] is False

    assert (await mail.queues.get_job_view("jobs", "e2"))["data"] == {"to": "a@example.com"}
    log = await mail.get_audit_log(5)
    assert log[0]["action"] == "job.update-data" and log[0]["result"] == "error"


async def test_actions_need_csrf_and_write_access(mail: MailManager,
                                                  client: httpx.AsyncClient) -> None:
    await failed_job(mail)
    await csrf_token(client, job_url("jobs", "fail-1"))  # the cookie, but no token sent
    for action in ("/retry", "/promote", "/remove", "/duplicate", "/data"):
        answer = await client.post(job_url("jobs", "fail-1", action), data={"data": "{}"})
        assert answer.status_code == 403, action
    assert (await mail.queues.get_job_view("jobs", "fail-1"))["state"] == "failed"

    read_only = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    read_only.state.mail = mail
    transport = httpx.ASGITransport(app=read_only)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as ro:
        page = await ro.get(job_url("jobs", "fail-1"))
        assert page.status_code == 200
        assert "Retry</button>" not in page.text and "<textarea" not in page.text
        token = await csrf_token(ro, job_url("jobs", "fail-1"))
        for action in ("/retry", "/remove", "/data"):
            answer = await post(ro, job_url("jobs", "fail-1", action), token, {"data": "{}"})
            assert answer.status_code == 403, action
    assert (await mail.queues.get_job_view("jobs", "fail-1"))["state"] == "failed"


async def test_live_regions_and_more_logs(mail: MailManager, client: httpx.AsyncClient,
                                          app: Any) -> None:
    job = await mail.add_job("jobs", "x", {}, jobId="logs")
    for i in range(150):
        await job.log(f"line {i} {XSS}")
    page = await client.get(job_url("jobs", "logs"))
    assert "line 149" in page.text and "line 50 " in page.text and "line 49 " not in page.text
    assert "Show earlier lines" in page.text
    everything = await client.get(job_url("jobs", "logs") + "?logs_from=0")
    assert "line 0 " in everything.text

    more = await client.get(job_url("jobs", "logs", "/logs", api=True) + "?start=140")
    assert more.json()["count"] == 150 and len(more.json()["logs"]) == 10
    fragment = await client.get(job_url("jobs", "logs", "/logs") + "?start=145",
                                headers={"HX-Request": "true"})
    assert 'id="job-logs"' in fragment.text and "line 145" in fragment.text
    assert "<html" not in fragment.text

    from starlette.requests import Request

    request = Request({"type": "http", "app": app, "headers": [], "method": "GET",
                       "path": "/live", "query_string": b"", "router": app.router})
    regions = await live_job(request, {"queue": "jobs", "job_id": "logs"})
    assert set(regions) == {"job-summary", "job-family", "job-logs"}
    assert 'sse-swap="job-logs"' in regions["job-logs"] and XSS not in regions["job-logs"]
    await job.log("a new line")
    regions = await live_job(request, {"queue": "jobs", "job_id": "logs"})
    assert "a new line" in regions["job-logs"]
    gone = await live_job(request, {"queue": "jobs", "job_id": "nope"})
    assert "No job" in gone["job-summary"]


def _summary(html: str) -> str:
    return html.split('id="job-summary"', 1)[1].split("</section>", 1)[0]


async def test_a_job_completed_after_a_retry_shows_its_failure_as_history(
    mail: MailManager, client: httpx.AsyncClient
) -> None:
    """Retried by hand, then completed: bullmq keeps the stack trace and counts on
    (attemptsMade 2 with attempts 1). No red "Failure", no "2 of 1"."""
    switch = {"fail": True}

    async def send(data: Any, job: Job) -> str:
        if switch["fail"]:
            raise RuntimeError("SMTP 550 mailbox unavailable")
        return "sent"

    await mail.add_job("jobs", "send", {}, jobId="retried", attempts=1)
    mail.start_worker("jobs", {"send": send})
    await wait_for_state(mail, "jobs", "retried", "failed")
    failed = _summary((await client.get(job_url("jobs", "retried"))).text)
    assert '<h2 class="state-failed">Failure</h2>' in failed
    assert "SMTP 550" in failed and "<summary>Attempt 1</summary>" in failed
    assert "1 of 1" in failed

    switch["fail"] = False
    await mail.queues.retry_job("jobs", "retried")
    await wait_for_state(mail, "jobs", "retried", "completed")
    # Read again: get_job_view reads the hash, then the state (not atomically).
    job = await mail.queues.get_job_view("jobs", "retried")
    assert job["attempts_made"] == 2 and job["stacktrace"]  # what bullmq keeps
    summary = _summary((await client.get(job_url("jobs", "retried"))).text)
    assert "state-failed" not in summary and ">Failure<" not in summary
    assert "<h2>Earlier failed attempts</h2>" in summary
    assert "<summary>Attempt 1</summary>" in summary  # the first attempt failed, not the 2nd
    assert "SMTP 550" in summary
    assert "2 of 1" not in summary
    assert "2 made: 1 allowed by its options, 1 more after a manual retry" in summary
