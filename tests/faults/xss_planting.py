"""Scenario 6's data: every payload of the corpus put everywhere a producer or an operator
controls, and the pages that show them.
"""

from __future__ import annotations

import json
import re
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlencode

import aiosmtplib
import httpx
from bullmq import Job

from mailqueue.manager import MailManager
from tests.faults.xss_corpus import CORPUS, html_problems, id_safe, queue_safe
from tests.waiting import eventually

MAIN = "xss-main"


async def plant_payloads(mail: MailManager, client: httpx.AsyncClient) -> dict[str, Any]:
    """Put every payload everywhere; returns the queues, job ids and outbox ids made."""
    queues = [MAIN] + [f"q{i}-{p}" for i, p in enumerate(CORPUS) if queue_safe(f"q-{p}")]
    job_ids: dict[str, list[str]] = {q: [] for q in queues}

    async def handler(data: Any, job: Job) -> Any:
        payload = data["payload"]
        await job.log(f"log line {payload}")
        await job.updateProgress({"step": payload})
        if data.get("fail"):
            raise RuntimeError(f"failed because {payload}")
        return {"result": payload}

    # The main queue: one failing and one completing job per payload, ids are payloads.
    jobs = []
    for i, payload in enumerate(CORPUS):
        for fail in (True, False):
            job_id = f"{'f' if fail else 'c'}{i}-{id_safe(payload)}"
            jobs.append({"name": payload, "data": {"payload": payload, "fail": fail,
                                                   "html": payload, payload: [payload]},
                         "opts": {"jobId": job_id, "attempts": 1}})
            job_ids[MAIN].append(job_id)
    await mail.add_jobs(MAIN, jobs)
    # A delayed and a waiting one (never processed: other queues have no worker).
    for q in queues[1:]:
        for i, payload in enumerate(CORPUS):
            job = await mail.add_job(q, payload, {"payload": payload}, jobId=f"w{i}")
            job_ids[q].append(str(job.id))
        delayed = await mail.add_job(q, CORPUS[0], {"payload": CORPUS[1]}, delay=3_600_000)
        job_ids[q].append(str(delayed.id))

    worker_name = "<svg/onload=window.__xss=15>"
    mail.start_worker(MAIN, {p: handler for p in CORPUS}, concurrency=4, name=worker_name)

    async def all_finished() -> bool:
        counts = await mail.queues.get_job_counts(MAIN)
        return counts.get("completed", 0) + counts.get("failed", 0) >= len(jobs)

    await eventually(all_finished, 30, f"the {len(jobs)} jobs of {MAIN} finished")

    # Schedules named after payloads.
    for i, payload in enumerate(CORPUS[:8]):
        await mail.schedule_job(queues[1], payload, {"payload": payload}, every=3_600_000,
                                scheduler_id=f"s{i}-{id_safe(payload)}")
    # A flow whose every name is a payload.
    flow = await mail.add_flow({
        "name": CORPUS[0], "queueName": queues[1], "data": {"p": CORPUS[2]},
        "opts": {"jobId": "flow-parent"},
        "children": [{"name": p, "queueName": queues[2], "data": {"p": p}}
                     for p in CORPUS[:4]],
    })
    # The audit log: an operator adds a job named after a payload (and fails another).
    page = await client.get("/")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text) or re.search(
        r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert match, "no CSRF token on the overview"
    for payload in CORPUS[:6]:
        added = await client.post(
            f"/queues/{quote(MAIN, safe='')}/add-job",
            data={"name": payload, "data": json.dumps({"p": payload}),
                  "csrf_token": match.group(1)},
            headers={"HX-Request": "true"})
        assert added.status_code == 200, added.text
        assert not html_problems(added.text), html_problems(added.text)
    refused = await client.post(
        f"/queues/{quote(MAIN, safe='')}/add-job",
        data={"name": CORPUS[0], "data": CORPUS[1], "csrf_token": match.group(1)})
    assert refused.status_code == 422
    assert not html_problems(refused.text), html_problems(refused.text)

    # E-mail through the development sink: subject, sender name, text and HTML.
    sink = await mail.start_dev_sink()
    for payload in CORPUS:
        message = EmailMessage()
        message["From"] = f'"{payload.replace(chr(34), "")}" <app@example.com>'
        message["To"] = "ada@example.com"
        message["Subject"] = payload
        message.set_content(f"text part {payload}")
        message.add_alternative(f"<html><body>{''.join(CORPUS)}</body></html>",
                                subtype="html")
        await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)
    outbox = [m["id"] for m in await mail.outbox.list_messages(100)]
    assert len(outbox) == len(CORPUS)
    return {"queues": queues, "job_ids": job_ids, "outbox": outbox, "flow": flow}


def page_paths(planted: dict[str, Any], browser: bool = False) -> list[tuple[str, int]]:
    """Every HTML page that shows a planted payload (paths with query strings), each with
    the status it answers; for the browser, fewer of each kind (one job page per payload,
    the states that hold jobs)."""
    q = lambda name: quote(name.replace("~", "~7E").replace("/", "~2F"), safe="")  # noqa: E731
    j = lambda job_id: quote(job_id, safe="")  # noqa: E731
    paths = ["/", "/?group=-", f"/?q={quote(CORPUS[0])}", "/schedules", "/workers",
             "/events", "/outbox"]
    for name in planted["queues"]:
        states = ("waiting", "delayed", "completed", "failed", "prioritized")
        if browser:
            states = ("completed", "failed") if name == MAIN else ("waiting",)
        for state in states:
            paths.append(f"/queues/{q(name)}?state={state}")
        for by in ("name", "data", "id")[: 1 if browser else 3]:
            paths.append(f"/queues/{q(name)}?" + urlencode({"q": CORPUS[0][:30], "by": by}))
        ids = planted["job_ids"][name]
        for job_id in (ids[::2] if name == MAIN else ids[:1]) if browser else ids[:40]:
            paths.append(f"/queues/{q(name)}/jobs/{j(job_id)}")
    for job_id in planted["job_ids"][MAIN][: 1 if browser else 6]:
        paths.append(f"/queues/{q(MAIN)}/jobs/{j(job_id)}/logs")
        paths.append(f"/queues/{q(MAIN)}/jobs/{j(job_id)}?logs_from=0")
    paths.append(f"/queues/{q(planted['queues'][1])}/jobs/flow-parent/flow")
    paths.append(f"/queues/{q(planted['queues'][1])}/jobs/flow-parent")
    for message_id in planted["outbox"][: 2 if browser else None]:
        paths.append(f"/outbox/{message_id}")
    shown = [(path, 200) for path in paths]
    # Error pages with a payload in the URL: unknown queue, job and message; a bad state.
    for payload in CORPUS[:4]:
        shown += [(f"/queues/{q('nope' + payload)}", 404),
                  (f"/queues/{q(MAIN)}/jobs/{j(payload)}", 404),
                  (f"/queues/{q(MAIN)}?state={quote(payload)}", 422),
                  (f"/outbox/{quote(payload, safe='')}", 404)]
    return shown
