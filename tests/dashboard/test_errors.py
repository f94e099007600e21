"""One mapping of refusals to answers (dashboard/errors.py): the same refusal is a page for a
browser and `{"error": ...}` for a script, with the status that says what went wrong."""

from __future__ import annotations

import html

import httpx

from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token


async def test_a_missing_queue_or_job_is_a_404_page_and_a_json_404(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    await mail.add_job("q", "x", {}, jobId="a")
    for path, heading in (("/queues/nope", "Queue not found"),
                          ("/queues/nope/latest", "Queue not found"),
                          ("/queues/q/jobs/nope", "Job not found"),
                          ("/queues/q/jobs/nope/flow", "Flow not found")):
        page = await client.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html"), path
        assert f"<h1>{heading}</h1>" in page.text, path
    job_page = (await client.get("/queues/q/jobs/nope")).text
    assert 'href="/queues/q"' in job_page  # back to the queue, which is there
    for path, message in (("/api/queues/nope", "No queue named 'nope'"),
                          ("/api/queues/nope/jobs", "No queue named 'nope'"),
                          ("/api/queues/q/jobs/nope", "No job 'nope' in queue 'q'"),
                          ("/queues/q/jobs/nope/data.json", "No job 'nope' in queue 'q'")):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert message in answer.json()["error"], path


async def test_a_bad_parameter_is_a_422_with_the_reason(mail: MailManager,
                                                        client: httpx.AsyncClient) -> None:
    await mail.add_job("q", "x", {})
    page = await client.get("/queues/q", params={"page": "<b>x</b>"})
    assert page.status_code == 422
    assert "page must be a whole number, 1 or more" in page.text
    assert "<b>x</b>" not in page.text
    assert 'href="/queues/q"' in page.text  # the queue itself, without the bad parameter
    api = await client.get("/api/queues/q/jobs", params={"per_page": "0"})
    assert api.status_code == 422 and "per_page must be" in api.json()["error"]


async def test_a_job_in_the_wrong_state_is_a_409(mail: MailManager,
                                                 client: httpx.AsyncClient) -> None:
    await mail.add_job("q", "x", {}, jobId="now")  # waiting: no delay to change
    token = await csrf_token(client, "/queues/q/jobs/now")
    answer = await client.post("/api/queues/q/jobs/now/delay",
                               headers={"x-csrf-token": token}, json={"delay_s": "5"})
    assert answer.status_code == 409
    assert answer.json()["ok"] is False and "waiting" in answer.json()["message"]
    page = await client.post("/queues/q/jobs/now/delay",
                             data={"csrf_token": token, "delay_s": "5"})
    assert page.status_code == 409
    assert "waiting" in html.unescape(page.text)
