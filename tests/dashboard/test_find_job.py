"""The "go to job id" box (issue 14): on every page; the server looks the id up in every queue
and redirects to the job, lists the queues when several hold it, or says in one line that
none does."""

from __future__ import annotations

import re

import httpx

from mailqueue.manager import MailManager

XSS = '<img src=x onerror="window.__xss=1">'


async def test_the_box_is_on_every_page(mail: MailManager, client: httpx.AsyncClient) -> None:
    await mail.add_job("a", "send", {})
    for path in ("/", "/queues/a", "/queues/a/jobs/1", "/schedules", "/workers", "/events",
                 "/outbox", "/jobs/find?id=nope"):
        page = (await client.get(path)).text
        assert re.search(r'<form class="jump" method="get" action="[^"]*/jobs/find"', page), path
        assert 'name="id"' in page, path


async def test_an_id_goes_to_its_job_in_whatever_queue(mail: MailManager,
                                                       client: httpx.AsyncClient) -> None:
    await mail.add_job("a", "send", {}, jobId="only-in-a")
    await mail.add_job("b/c", "send", {}, jobId="order/7?x#y")
    await mail.add_job("a", "send", {}, jobId="twice")
    await mail.add_job("b/c", "send", {}, jobId="twice")

    answer = await client.get("/jobs/find", params={"id": " only-in-a "})
    assert answer.status_code == 303 and answer.headers["location"] == "/queues/a/jobs/only-in-a"
    answer = await client.get("/jobs/find", params={"id": "order/7?x#y"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/queues/b~2Fc/jobs/order%2F7%3Fx%23y"
    assert (await client.get(answer.headers["location"])).status_code == 200

    several = await client.get("/jobs/find", params={"id": "twice"})
    assert several.status_code == 200
    assert 'href="/queues/a/jobs/twice"' in several.text
    assert 'href="/queues/b~2Fc/jobs/twice"' in several.text

    api = (await client.get("/api/jobs/find", params={"id": "twice"})).json()
    assert api["queues"] == ["a", "b/c"] and api["searched"] == 2


async def test_an_unknown_id_is_one_line_and_escaped(mail: MailManager,
                                                     client: httpx.AsyncClient) -> None:
    await mail.add_job("a", "send", {})
    for job_id in ("nope", XSS, "meta", "wait", "events", "id"):  # no queue key is a job
        answer = await client.get("/jobs/find", params={"id": job_id})
        assert answer.status_code == 404, job_id
        line = re.findall(r'<p class="result error problem" role="status">(.*?)</p>',
                          answer.text, re.S)
        assert len(line) == 1 and "\n" not in line[0], line
        assert "any of the 1 queue." in line[0]
    assert XSS not in answer.text
    answer = await client.get("/jobs/find", params={"id": XSS})
    assert XSS not in answer.text and "&lt;img src=x" in answer.text
    # The box keeps what was typed, to correct it.
    assert re.search(r'name="id"[^>]*value="nope"', (await client.get(
        "/jobs/find", params={"id": "nope"})).text)
    assert (await client.get("/api/jobs/find", params={"id": "nope"})).status_code == 404
    # Elsewhere the box is empty: a job page does not fill it with its own id.
    await mail.add_job("a", "send", {}, jobId="shown")
    job_page = (await client.get("/queues/a/jobs/shown")).text
    box = re.search(r'<input type="search" name="id"[^>]*>', job_page)
    assert box and "value=" not in box.group(0), box
    assert (await client.get("/jobs/find")).status_code == 200  # no id: how to use the box
    no_id = await client.get("/api/jobs/find")
    assert no_id.status_code == 200 and no_id.json()["queues"] == []
